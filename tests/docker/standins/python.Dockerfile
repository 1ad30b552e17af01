# Stand-in for python:3.11.14-slim-bookworm (tests only): Debian's python3.11 in a venv, so that
# `python` and `pip` are on the PATH and pip installs system-wide as in the official image.
FROM credit-risk-standin/debian:bookworm
RUN apt-get update \
    && apt-get install -y python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /usr/local/python \
    && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
ENV PATH=/usr/local/python/bin:$PATH
CMD ["python3"]
