"""Rank browser: each query's ranked gallery, worst first, and why a match looks similar."""
import streamlit as st

from app import cache
from app import model_views as mv
from esnet import api

st.title("Rank browser")
t = mv.target()

c1, c2, c3 = st.columns([2, 2, 1])
order = c1.radio("Order queries", mv.ORDERS, horizontal=True, key="rank_order")
topk = c2.slider("Top-k", 5, 20, 10, key="rank_topk")
rerank = c3.checkbox("Re-ranked", key="rank_rerank", help="k-reciprocal re-ranking (k1=20, k2=6, λ=0.3)")
rep = mv.report(t, rerank=rerank)
queries = mv.ordered_queries(rep.per_query, order)

q = mv.query_picker(queries, order, rerank=rerank)
ranking = api.query_ranking(rep, int(q["query"]), topk=topk)
st.subheader(f"Query #{q['query']}: identity {q['pid']}, camera {q['camera']}")
st.caption("Blue: the query. Green: same identity. Red: another identity. Grey: same identity and camera "
           "as the query, ignored by the standard protocol.")
mv.ranking_strip(q["path"], f"query  \nAP {q['ap']:.2f}" if q["valid"] else "query", ranking)

st.subheader("Why do they look alike?")
scored = ranking.loc[~ranking["ignored"]]
if scored.empty:
    st.info(f"Every image in the top {topk} is the query's own identity seen by the query's camera, which the "
            "protocol ignores: raise Top-k to see a scored match explained.")
    st.stop()
pick = st.radio("Explain the match at rank", list(scored["rank"]), horizontal=True, key="rank_pick",
                format_func=lambda r: f"#{r} {'✓' if scored.set_index('rank').loc[r, 'correct'] else '✗'}")
hit = scored.set_index("rank").loc[pick]
mv.pair_view(t, q["path"], hit["path"], query_caption=f"query · id {q['pid']}",
             match_caption=f"#{pick} · id {hit['pid']} · d={hit['distance']:.3f}",
             center=cache.report_center(rep))

with st.expander(f"All queries, {order}"):
    st.dataframe(mv.printable_paths(queries), hide_index=True, width="stretch",
                 column_config={"ap": st.column_config.NumberColumn("AP", format="%.3f")})
