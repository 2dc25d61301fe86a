"""Search: upload person crops, rank the gallery, see what the model looks at and decide "same person?"."""
import streamlit as st

from app import cache
from app import model_views as mv

st.title("Search the gallery")
t = mv.target()

files = st.file_uploader("Query images (person crops)", type=["jpg", "jpeg", "png", "bmp", "webp"],
                         accept_multiple_files=True, key="search_files")
c1, c2 = st.columns(2)
topk = c1.slider("Top-k", 1, 20, 8, key="search_topk")
saliency = c2.radio("Saliency overlay", list(mv.SALIENCY_CHOICES), horizontal=True, key="search_saliency",
                    help="similarity: what makes query and hit alike · own CAM: the map ES-Net erases from · "
                         "Grad-CAM: gradients of the predicted identity")
inf = mv.inference(t)
rep = mv.report(t)
mv.search_header(t, inf, rep)
threshold = mv.operating_point(rep, key=f"search_point_{rep.checkpoint_sha[:12]}")

if not files:
    st.info(f"Upload one or more query images (up to {st.get_option('server.maxUploadSize')} MB each) to search "
            f"the {rep.num_gallery} gallery images of {t.dataset}; up to {mv.MAX_UPLOADS} are searched at once.")
    st.stop()

with mv.shown_errors("Cannot index the gallery"):
    gallery = cache.gallery(t.path, t.dataset, t.root)
with mv.shown_errors("Search failed"):
    outcome = mv.search_uploads(inf, gallery, [(f.name, f.getvalue()) for f in files], topk=topk)
for message in outcome.errors:
    st.error(f"Skipped an upload: {message}")
for i, upload in enumerate(outcome.queries):
    st.divider()
    mv.search_hits(t, upload, outcome.result.to_frame(i), saliency=saliency, threshold=threshold,
                   center=cache.gallery_center(t.path, t.dataset, t.root))
