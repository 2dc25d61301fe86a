"""Home: what esnet is and the embedded demo dataset."""
import streamlit as st

from app import cache
from esnet import api

st.title("esnet: Erasing Salient Parts to Learn More")
st.markdown(
    "ES-Net trains a **global branch** whose class activation map marks the most salient "
    "region of each person, and an **erasing branch** that must identify them with that "
    "region dropped. **P-pooling** (generalized mean with a trainable exponent *p*) sits "
    "between average (*p* = 1) and max pooling."
)

root = cache.demo_root()
st.subheader("Demo dataset")
st.caption(f"Synthetic persons in Market-1501 layout at `{root}`")
try:
    overview = cache.dataset_overview("demo", root)
except api.DatasetError as e:
    st.error(f"The demo dataset could not be read: {e}")
else:
    st.dataframe(overview, hide_index=True)
