"""Evaluate: R1/R5/R10/mAP/mINP, CMC and verification ROC of the run on the dataset; per-query CSV."""
import streamlit as st

from app import viz_model
from app import model_views as mv

st.title("Evaluate")
t = mv.target()
if t.dataset == "vehicleid":  # its own protocol: random gallery draws, mean ± std
    mv.render_vehicleid(t)
    st.stop()

c1, c2, c3 = st.columns(3)
rerank = c1.checkbox("k-reciprocal re-ranking", key="eval_rerank", help="k1=20, k2=6, λ=0.3 (Zhong et al. 2017)")
flip = c2.checkbox("Flip test (average with the mirror image)", key="eval_flip")
choices = mv.feature_choices(mv.inference(t))
feature = c3.selectbox("Test feature", choices, key="eval_feature", format_func=mv.FEATURE_LABELS.get,
                       disabled=len(choices) == 1,
                       help="Score one branch on its own without retraining; the first choice is the run's own. "
                            "A run without an erasing branch has only the global one.")
feature_arg = None if feature == choices[0] else feature  # the run's own: share the other pages' cached model
rep = mv.report(t, rerank=rerank, flip=flip, feature=feature_arg)
label = "re-ranked" if rerank else "cosine"
st.dataframe(mv.metrics_table(rep.summary, label), hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(f"{k} (%)", format="%.2f")
                            for k in ("R1", "R5", "R10", "mAP", "mINP")})
st.caption(f"{rep.result.num_valid_queries} of {rep.num_query} queries scored against {rep.num_gallery} gallery "
           f"images · test feature: {mv.FEATURE_LABELS[rep.test_feature]} · {mv.checkpoint_label(rep.checkpoint)}")
for path, reason in rep.skipped:
    st.warning(f"Skipped unreadable image {path}: {reason}")

curves = {label: rep.cmc}
if rerank:
    curves = {"cosine": mv.report(t, flip=flip, feature=feature_arg).cmc, **curves}
left, right = st.columns(2)
with left:
    st.subheader("CMC")
    st.plotly_chart(viz_model.cmc_figure(curves), width="stretch")
with right:
    v = rep.verification
    st.subheader("Verification ROC")
    st.plotly_chart(viz_model.roc_figure(v.fpr, v.tpr, auc=v.auc, best_fpr=v.best_fpr, best_tpr=v.best_tpr),
                    width="stretch")
    st.caption(f"Operating point (max TPR − FPR): distance ≤ {v.best_threshold:.3f} · TPR {v.best_tpr:.1%} · "
               f"FPR {v.best_fpr:.1%}")

st.subheader("Per-query results")
st.dataframe(mv.printable_paths(rep.per_query), hide_index=True, width="stretch", height=260)
st.download_button("Download per-query results (CSV)", mv.per_query_csv(rep), key="eval_csv",
                   file_name=f"{t.run}_{t.dataset}_{feature}{'_rerank' if rerank else ''}{'_flip' if flip else ''}"
                             "_per_query.csv",
                   mime="text/csv")
