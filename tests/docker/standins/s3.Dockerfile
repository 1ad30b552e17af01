# Stand-in for MinIO and its `mc` client (tests only): s3rver (npm) on :9000 with its objects in
# /data, installed from s3/package-lock.json on the host; runs as an unprivileged user.
FROM credit-risk-standin/debian:bookworm
RUN apt-get update \
    && apt-get install -y nodejs \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10002 --create-home s3 \
    && mkdir -p /data && chown s3:s3 /data
COPY s3/node_modules /opt/s3/node_modules
COPY s3/minio-standin.js /opt/s3/minio-standin.js
COPY s3/mc /usr/local/bin/mc
USER s3
EXPOSE 9000
ENTRYPOINT ["node", "/opt/s3/minio-standin.js"]
CMD ["server", "/data"]
