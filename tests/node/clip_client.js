// A Node.js client built from the .proto files alone (no generated code): it checks health,
// then embeds a text, an image file and a corrupt image, and prints what it got as JSON.
//
//   node tests/node/clip_client.js HOST:PORT "a text" path/to/image.png
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

function call(client, method, request) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
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
  const credentials = grpc.credentials.createInsecure();
  const clip = load("clip_grpc/v1/clip.proto", [path.join(REPO, "proto")]).clip_grpc.v1;
  const health = load("health.proto", [__dirname]).grpc.health.v1;

  const healthClient = new health.Health(target, credentials);
  const overall = await call(healthClient, "Check", { service: "" });
  const service = await call(healthClient, "Check", { service: "clip_grpc.v1.ClipService" });

  const clipClient = new clip.ClipService(target, credentials);
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
