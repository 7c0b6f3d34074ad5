"""How each example was made: `examples.strategy` and `examples.source_id` (curate/synth/strategies.py).

`strategy`: repair | constrained | sample | revise (compose mode), full (full mode); NULL for a reviewer's edit
(its `edited_from` names the original, whose strategy it keeps). `source_id`: the row whose response the candidate
was made from: the failing production trace (a repair or revision of production's own answer) or the failing
teacher sample (an `examples` id); NULL for text the teacher wrote from scratch (sample, constrained, full).
`request_hash` keeps naming the teacher call that wrote the text (for a repair of a teacher sample, the sample's
call; NULL for a repair of production's answer: no call at all).

Rows written before this migration are labelled from what they recorded: full mode -> full, a `guidance` record
-> constrained (token bans were the constrained strategy's first form), other compose rows -> sample.
"""


def apply(con):
    con.execute("ALTER TABLE examples ADD COLUMN strategy VARCHAR")
    con.execute("ALTER TABLE examples ADD COLUMN source_id VARCHAR")
    con.execute("""UPDATE examples SET strategy = CASE WHEN mode = 'full' THEN 'full'
                                                       WHEN mode = 'compose' AND guidance IS NOT NULL THEN 'constrained'
                                                       WHEN mode = 'compose' THEN 'sample' END""")
