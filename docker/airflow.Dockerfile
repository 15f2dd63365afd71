# The fluxo Airflow image: Airflow 3.3.2 with the platform's locked requirements, a JDK 17 for the
# local Spark runs of the Glue stages (and to build fluxo's Delta log store), the Spark packages
# from Maven in the image's Ivy cache, and the repository laid out as in a checkout (/opt/fluxo),
# so the Glue operator finds glue_scripts/ and expectations/ where it looks in development.
#   docker build -f docker/airflow.Dockerfile -t fluxo-airflow .
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jdk-headless curl \
    && ln -sfn "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/opt/java

USER airflow
# The same pins as `make venv`: requirements.txt under the full lock constraints.txt
# (it pins apache-airflow==3.3.2, the version of the base image).
COPY --chown=airflow:root requirements.txt constraints.txt /opt/fluxo/
RUN pip install --no-cache-dir -r /opt/fluxo/requirements.txt -c /opt/fluxo/constraints.txt \
    && pip check

COPY --chown=airflow:root pyproject.toml /opt/fluxo/
COPY --chown=airflow:root fluxo /opt/fluxo/fluxo
COPY --chown=airflow:root fluxo_dev /opt/fluxo/fluxo_dev
COPY --chown=airflow:root glue_scripts /opt/fluxo/glue_scripts
COPY --chown=airflow:root expectations /opt/fluxo/expectations
COPY --chown=airflow:root plugins /opt/fluxo/plugins
COPY --chown=airflow:root dags /opt/fluxo/dags
COPY --chown=airflow:root jvm /opt/fluxo/jvm
# the checkout's import paths: the Glue library and dev tools at the root, Airflow-side packages in plugins/
ENV PYTHONPATH=/opt/fluxo:/opt/fluxo/plugins \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/fluxo/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/fluxo/plugins \
    FLUXO_HOME=/opt/fluxo/home \
    FLUXO_DELTA_LOGSTORE_JAR=/opt/fluxo/build/jars/fluxo-delta-logstore.jar
WORKDIR /opt/fluxo
# Delta and hadoop-aws into the image's Ivy cache (no Maven at run time), and the log store jar
RUN python -m fluxo_platform.jvm
