"""Forward-only numbered SQL migrations (`NNNN_name.sql`), applied by `catalog.migrate`.

Never edit a migration that has shipped: add the next number. `migrate` records a
checksum of each file and refuses to run if an applied one has changed.
"""
