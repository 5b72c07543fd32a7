"""arq workers: small jobs that take ids, load state from the database and checkpoint there."""
