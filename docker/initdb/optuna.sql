-- The second database of the stack: Optuna's RDB storage (shared suites and studies). The first,
-- POSTGRES_DB, is MLflow's backend store.
CREATE DATABASE optuna OWNER bnnbench;
