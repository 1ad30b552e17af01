# Stand-in for postgres:16-bookworm (tests only): Debian bookworm's PostgreSQL 15. The entrypoint
# honours POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB like the official image; runs as `postgres`.
FROM credit-risk-standin/debian:bookworm
RUN apt-get update \
    && apt-get install -y postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
