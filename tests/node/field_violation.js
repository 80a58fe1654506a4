// A Node.js client reading a whole-RPC error the standard way: google.rpc.Status from the
// grpc-status-details-bin trailer, decoded with protobufjs from googleapis' own .proto files,
// then the BadRequest detail's field violations. Prints them as JSON.
//
//   node tests/node/field_violation.js HOST:PORT GOOGLEAPIS_PROTO_DIR
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const REPO = path.resolve(__dirname, "..", "..");

async function main() {
  const [target, googleapis] = process.argv.slice(2);
  const definition = protoLoader.loadSync("clip_grpc/v1/clip.proto", {
    keepCase: true, defaults: true, oneofs: true, includeDirs: [path.join(REPO, "proto")],
  });
  const clip = grpc.loadPackageDefinition(definition).clip_grpc.v1;
  const client = new clip.ClipService(target, grpc.credentials.createInsecure());
  const request = {
    query: { id: "q", text: "a cat" },
    candidates: [{ id: "ok", text: "a" }, { id: "broken", image: Buffer.from("nope") }],
  };
  const error = await new Promise((resolve) => {
    client.Rank(request, { deadline: new Date(Date.now() + 30000) }, (err) => resolve(err));
  });
  client.close();
  if (!error) throw new Error("the call succeeded");

  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(googleapis, target);
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
  const Status = root.lookupType("google.rpc.Status");
  const BadRequest = root.lookupType("google.rpc.BadRequest");
  const [details] = error.metadata.get("grpc-status-details-bin");
  const status = Status.decode(details);
  const violations = [];
  // protobufjs names fields in camelCase or as in the .proto, depending on its version.
  for (const any of status.details) {
    if ((any.typeUrl || any.type_url) === "type.googleapis.com/google.rpc.BadRequest") {
      const badRequest = BadRequest.decode(any.value);
      violations.push(...(badRequest.fieldViolations || badRequest.field_violations));
    }
  }
  console.log(JSON.stringify({
    code: error.code, status_code: status.code, message: status.message,
    violations: violations.map((v) => ({ field: v.field, description: v.description })),
  }));
}

main().catch((error) => {
  console.error(`field_violation.js: ${error.stack}`);
  process.exit(1);
});
