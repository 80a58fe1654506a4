// A Node.js client built from the .proto files alone (no generated code): it checks health,
// then embeds a text, an image file and a corrupt image, and prints what it got as JSON.
//
//   node tests/node/clip_client.js HOST:PORT "a text" path/to/image.png
//
// Against a server with TLS and tokens (clip-grpc --tls-cert ... --auth-token-file ...), set
//   CLIP_GRPC_ROOT_CERT=ca.pem          PEM roots that sign the server's certificate (TLS on)
//   CLIP_GRPC_CLIENT_CERT / _KEY        the client's certificate and key, for mTLS
//   CLIP_GRPC_TOKEN=...                 sent as "authorization: Bearer <token>" on every call
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const REPO = path.resolve(__dirname, "..", "..");
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function load(file, includeDirs) {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs }));
}

function credentials() {
  const read = (name) => (process.env[name] ? fs.readFileSync(process.env[name]) : null);
  const roots = read("CLIP_GRPC_ROOT_CERT");
  if (!roots) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(roots, read("CLIP_GRPC_CLIENT_KEY"), read("CLIP_GRPC_CLIENT_CERT"));
}

// Per-call metadata rather than call credentials: grpc-js only composes those with TLS.
function metadata() {
  const md = new grpc.Metadata();
  if (process.env.CLIP_GRPC_TOKEN) md.set("authorization", `Bearer ${process.env.CLIP_GRPC_TOKEN}`);
  return md;
}

function call(client, method, request) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

// Embedding.packed holds little-endian float32s.
function unpack(buffer) {
  const values = [];
  for (let offset = 0; offset < buffer.length; offset += 4) values.push(buffer.readFloatLE(offset));
  return values;
}

function describe(result) {
  if (result.outcome === "embedding") {
    const { dim, packed, values } = result.embedding;
    return { id: result.id, dim, values: packed.length ? unpack(packed) : values };
  }
  return { id: result.id, error: result.error };
}

async function main() {
  const [target, text, imagePath] = process.argv.slice(2);
  if (!target || !text || !imagePath) throw new Error("usage: clip_client.js HOST:PORT TEXT IMAGE");
  const channelCredentials = credentials();
  const clip = load("clip_grpc/v1/clip.proto", [path.join(REPO, "proto")]).clip_grpc.v1;
  const health = load("health.proto", [__dirname]).grpc.health.v1;

  const healthClient = new health.Health(target, channelCredentials);
  const overall = await call(healthClient, "Check", { service: "" });
  const service = await call(healthClient, "Check", { service: "clip_grpc.v1.ClipService" });

  const clipClient = new clip.ClipService(target, channelCredentials);
  const items = [
    { id: "text", text },
    { id: "image", image: fs.readFileSync(imagePath) },
    { id: "corrupt", image: Buffer.from("not an image") },
  ];
  const packed = await call(clipClient, "Embed", { items });
  const floatList = await call(clipClient, "Embed", {
    items: items.slice(0, 1),
    options: { format: "EMBEDDING_FORMAT_FLOAT_LIST" },
  });
  const info = await call(clipClient, "Info", {});

  console.log(JSON.stringify({
    health: { overall: overall.status, service: service.status },
    model_name: info.model_name,
    embedding_dim: info.embedding_dim,
    packed: packed.results.map(describe),
    float_list: floatList.results.map(describe),
  }));
  healthClient.close();
  clipClient.close();
}

main().catch((error) => {
  console.error(`clip_client.js: ${error.message}`);
  process.exit(1);
});
