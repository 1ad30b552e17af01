# Stand-in layer over the debootstrap'd bookworm rootfs (tests only): Debian's ca-certificates,
# then the host's CA bundle over its bundle (the package registries are reached through the
# host's CAs; installing ca-certificates later would regenerate the bundle without them).
FROM credit-risk-standin/debian-rootfs:bookworm
LABEL credit-risk.standin="test stand-in built by tests/docker/standin_images.py, not an official image"
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > /etc/apt/apt.conf.d/90standin \
    && apt-get update \
    && apt-get install -y ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
