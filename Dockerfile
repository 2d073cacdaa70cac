# adapterd container image. Both stages install from deploy/packages.txt, the
# same list ./x setup uses: the "build" packages here, the "runtime" ones below.
FROM debian:trixie AS build
COPY deploy/packages.txt /tmp/packages.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      $(awk '!/^#/ && NF >= 2 && $2 == "build" { print $1 }' /tmp/packages.txt) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DADAPTERD_BUILD_TESTS=OFF \
 && cmake --build build --target adapterd adapterctl adapterd_sentencepiece

FROM debian:trixie-slim AS runtime
COPY deploy/packages.txt /tmp/packages.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      $(awk '!/^#/ && NF >= 2 && $2 == "runtime" { print $1 }' /tmp/packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt \
 && useradd --system --create-home --uid 10001 adapterd
COPY --from=build /src/build/server/adapterd /src/build/server/adapterctl /usr/local/bin/
# The text layer opens this shim for SentencePiece tokenizer.model files.
COPY --from=build /src/build/server/libadapterd_sentencepiece.so /usr/local/lib/adapterd/
USER adapterd
ENV ADAPTERD_CACHE_DIR=/home/adapterd/cache
EXPOSE 50051 8000 9464
# With no --model the server generates and serves the demo model. Mount a
# checkpoint and pass --model=/models/NAME to serve a real one.
# Inference listens on all interfaces, over gRPC and the OpenAI-compatible
# HTTP API; Admin only on the container's loopback unless --admin_listen
# says otherwise (the HTTP API's LoRA endpoints need the admin token). Plaintext is chosen here explicitly
# (for a mesh that terminates TLS); to serve TLS, mount a certificate and
# pass --tls_cert_file/--tls_key_file instead of --plaintext.
ENTRYPOINT ["adapterd", "--listen=0.0.0.0:50051", "--admin_listen=127.0.0.1:50052", \
            "--http_listen=0.0.0.0:8000", "--metrics_listen=0.0.0.0:9464", "--plaintext"]
