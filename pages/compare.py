"""Baseline vs ES-Net: where erasing wins or loses AP, query by query, and how widely each model looks."""
import streamlit as st

from app import compare_views as cv

st.title("Baseline vs ES-Net")
pair = cv.pick_pair()
rep_a, rep_b, diff = cv.differences(pair)

st.subheader("Per-query ΔAP")
st.caption(f"ΔAP = AP of B ({pair.b.run}) − AP of A ({pair.a.run}) on each of the {len(diff):,} queries both score.")
cv.render_outcome(pair, diff)
wins, losses = cv.extremes(diff, "wins"), cv.extremes(diff, "losses")
cv.render_extremes(pair, wins, losses)

st.subheader("One query, both models")
c1, c2 = st.columns([4, 1])
q = cv.pick_query(c1, diff, wins, losses)
topk = c2.slider("Top-k", 5, 10, 10, key="compare_topk")
st.caption("Blue: the query. Green: same identity. Red: another identity. Grey: same identity and camera, "
           "ignored by the protocol.")
cv.render_rankings(pair, rep_a, rep_b, q, topk)
st.markdown("**Each model's own CAM** (global branch, for the training identity it predicts)")
cv.render_cams(pair, rep_a, rep_b, q)

st.subheader("Attention spread on the query set")
measure = st.radio("Measure", cv.MEASURES, horizontal=True, key="compare_measure",
                   help="coverage: the smallest fraction of the feature cells that holds half of the positive CAM "
                        "mass; entropy: the CAM's normalised entropy. Higher = the model looks at more of the image.")
cv.render_spread(pair, measure)
