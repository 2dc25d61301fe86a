"""Dashboard entry point: the router. Registers every page explicitly."""
import streamlit as st

st.set_page_config(page_title="esnet", page_icon=":mag:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
]

st.navigation(PAGES).run()
