"""Storage: the database, its schema and migrations, and the SQL for each kind of record."""
