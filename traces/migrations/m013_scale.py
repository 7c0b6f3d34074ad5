"""Incremental work at scale (issue 24 item 6): what lets a nightly skip what it already did.

- `ingests.file_size`, `ingests.file_mtime_ns`: the file's stat when it was hashed. An inbox file whose path, size
  and mtime match a `complete` ingest is skipped without being read; a changed size or mtime is hashed again (the
  content hash stays the file's identity). NULL on rows from before m013: those files are hashed once more.
- `embedding_cache`: one vector per (embedder, sha256 of the text). Decontamination embeds each eval prompt once,
  not every prompt again whenever one is added (train.embed.cached). A table in the store rather than an .npy and
  an index beside it: the lookup is one join, a write is a transaction (two processes cannot interleave half a file),
  and the cache follows MEND_DB, so a test's or a user's own store keeps its own vectors.
"""


def apply(con):
    con.execute("ALTER TABLE ingests ADD COLUMN file_size BIGINT")
    con.execute("ALTER TABLE ingests ADD COLUMN file_mtime_ns BIGINT")
    con.execute("""CREATE TABLE embedding_cache (
        embedder VARCHAR NOT NULL,      -- which function made the vector (its dotted name)
        text_sha256 VARCHAR NOT NULL,   -- hex sha256 of the UTF-8 text
        embedding FLOAT[] NOT NULL,     -- as the embedder returned it
        created_at TIMESTAMP DEFAULT now(),
        PRIMARY KEY (embedder, text_sha256))""")
