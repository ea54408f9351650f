# The Airflow image of docker-compose.yml: the official Airflow image plus this provider, the
# example extras (cosmos, OpenLineage, sqlglot) and dbt in its own venv, all from the pins.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

USER airflow
WORKDIR /opt/retl
COPY --chown=airflow:root pyproject.toml README.md constraints.txt constraints-dbt.txt ./
COPY --chown=airflow:root airflow_provider_retl ./airflow_provider_retl
RUN pip install --no-cache-dir -c constraints.txt ".[emulators,duckdb,postgres,sqlite,examples]"

# dbt pins protobuf<7 and pathspec<0.13, which Airflow's pins exclude: a venv of its own,
# which cosmos calls as a subprocess (RETL_DBT_EXECUTABLE).
RUN python -m venv /home/airflow/dbt-venv \
    && /home/airflow/dbt-venv/bin/pip install --no-cache-dir -c constraints-dbt.txt "dbt-core<1.12" dbt-duckdb
ENV RETL_DBT_EXECUTABLE=/home/airflow/dbt-venv/bin/dbt \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false

WORKDIR /opt/airflow
