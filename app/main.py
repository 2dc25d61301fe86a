"""Dashboard entry point: the router. Registers every page explicitly.

Run it with ``streamlit run app/main.py``. It lives in ``app/`` rather than at the top level so that
the top-level ``pages/`` is not beside it: in Streamlit 1.67 a ``pages/`` folder next to the entry
script starts a fresh server's first session in the legacy folder mode (file names in the sidebar).
Page paths are relative to this file.
"""
import streamlit as st

from app import state

st.set_page_config(page_title="esnet", page_icon=":mag:", layout="wide")

PAGES = [
    st.Page("../pages/runs.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("../pages/monitor.py", title="Training monitor", icon=":material/monitoring:"),
    st.Page("../pages/erasing.py", title="Erasing inspector", icon=":material/select:"),
    st.Page("../pages/pooling.py", title="Pooling comparison", icon=":material/functions:"),
    st.Page("../pages/rank_browser.py", title="Rank browser", icon=":material/format_list_numbered:"),
    st.Page("../pages/embeddings.py", title="Embedding explorer", icon=":material/scatter_plot:"),
    st.Page("../pages/search.py", title="Search", icon=":material/image_search:"),
    st.Page("../pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("../pages/compare.py", title="Baseline vs ES-Net", icon=":material/compare:"),
]

page = st.navigation(PAGES)
state.sidebar()  # shared by every page; drawn here so its widgets keep their values across pages
page.run()
