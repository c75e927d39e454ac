-- Runs once, when the compose stack's Postgres volume is created: MLflow's tracking and
-- registry store get a database of their own next to Dagster's (POSTGRES_DB=dagster).
CREATE DATABASE mlflow;
