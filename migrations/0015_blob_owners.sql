-- Which tenant uploaded which input file. Blobs are files beside the log,
-- content-addressed (`blobs/sha256/…`), so one copy serves every tenant that
-- uploads the same bytes; this table is what keeps tenants apart: a
-- submission may name only blobs its own tenant uploaded, and an upload
-- answers 201 or 200 by whether *this* tenant had uploaded those bytes, so
-- no tenant learns what another uploaded. Not a read model: uploads are not
-- events (a task's submission records the digests it uses). Files uploaded
-- before tenants existed have no row: upload them again (same bytes, same
-- digest) before naming them in a new submission.
CREATE TABLE IF NOT EXISTS blob_owners (
    tenant      text        NOT NULL,
    sha256      text        NOT NULL,
    size        bigint      NOT NULL,
    uploaded_at timestamptz NOT NULL,
    uploaded_by uuid        NOT NULL,
    PRIMARY KEY (tenant, sha256)
);
