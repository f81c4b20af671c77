-- One database for the attest logs, one for MLflow's tracking store.
CREATE USER attest WITH PASSWORD 'attest';
CREATE DATABASE attest OWNER attest;
CREATE USER mlflow WITH PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
