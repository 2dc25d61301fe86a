"""Dashboard entry point: the router. Registers every page explicitly."""
import streamlit as st

from app import state

st.set_page_config(page_title="esnet", page_icon=":mag:", layout="wide")

PAGES = [
    st.Page("views/runs.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("views/monitor.py", title="Training monitor", icon=":material/monitoring:"),
    st.Page("views/erasing.py", title="Erasing inspector", icon=":material/select:"),
    st.Page("views/pooling.py", title="Pooling comparison", icon=":material/functions:"),
    st.Page("views/rank_browser.py", title="Rank browser", icon=":material/format_list_numbered:"),
    st.Page("views/embeddings.py", title="Embedding explorer", icon=":material/scatter_plot:"),
    st.Page("views/search.py", title="Search", icon=":material/image_search:"),
    st.Page("views/evaluate.py", title="Evaluate", icon=":material/analytics:"),
]

page = st.navigation(PAGES)
state.sidebar()  # shared by every page; drawn here so its widgets keep their values across pages
page.run()
