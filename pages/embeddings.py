"""Embedding explorer: query + gallery features in 2-D; pick a point to see it and its neighbours."""
import streamlit as st

from app import cache, viz_model
from app import model_views as mv
from esnet import api

st.title("Embedding explorer")
t = mv.target()

METHODS = {"UMAP": "umap", "PCA": "pca", "t-SNE": "tsne"}
c1, c2, c3 = st.columns([2, 2, 1])
method = c1.radio("Projection", list(METHODS), horizontal=True, key="emb_method")
colour_by = c2.radio("Colour by", list(viz_model.COLOUR_BY), horizontal=True, key="emb_colour")
seed = c3.number_input("Seed", 0, 10_000, 0, key="emb_seed")
rep = mv.report(t)
if METHODS[method] == "umap":
    cache.umap_warm_up()
with mv.shown_errors(f"Cannot compute the {method} projection"):
    frame = cache.projection(t.path, t.dataset, t.root, method=METHODS[method], seed=int(seed))
st.caption(f"{len(frame)} images ({rep.num_query} query, {rep.num_gallery} gallery) of {frame['pid'].nunique()} "
           f"identities · {method} of the {rep.query.features.shape[1]}-d features. Hover for id / camera; "
           "click a point to show it and its nearest neighbours.")

# A click (chart selection) moves the picker; the picker also works on its own.
clicked = mv.picked_row(st.session_state.get("emb_chart"))
if clicked is not None and clicked != st.session_state.get("emb_last_click"):
    st.session_state["emb_last_click"] = clicked
    st.session_state["emb_row"] = clicked
row = st.number_input(f"Picked image (row 0-{len(frame) - 1})", 0, len(frame) - 1, key="emb_row")
st.plotly_chart(viz_model.embedding_figure(frame, colour_by, selected=int(row)), key="emb_chart",
                on_select="rerun", selection_mode="points", width="stretch")

k = st.slider("Neighbours", 4, 12, 8, key="emb_k")
neighbours = api.nearest_neighbours(rep, int(row), k=k)
same = int((neighbours["pid"] == frame.iloc[int(row)]["pid"]).sum())
st.subheader(f"Row {row} and its {k} nearest neighbours ({same} share its identity)")
mv.neighbours_strip(frame, int(row), neighbours)
