"""Run by the clip-client venv's Python (never by ours): clip_client.Client against our
servers, on loopback only. Usage: clip_client_calls.py URL IMAGES_DIR OUT.json

encode texts, image paths and a data: URI; rank an image against captions and a text against
images; profile(). Writes what the client returned to OUT.json."""

import json
import os
import sys

# Before jina loads: no version check against a package index, no telemetry event.
os.environ["NO_VERSION_CHECK"] = "1"
os.environ["JINA_OPTOUT_TELEMETRY"] = "1"

from clip_client import Client  # noqa: E402
from docarray import Document  # noqa: E402

url, images_dir, out = sys.argv[1:4]
red, blue = os.path.join(images_dir, "red.png"), os.path.join(images_dir, "blue.jpg")
with open(os.path.join(images_dir, "red.uri")) as uri_file:
    red_uri = uri_file.read()
texts = ["a photo of a red circle", "a blue square"]
client = Client(url)

vectors = client.encode([*texts, red, blue, red_uri])
queries = client.rank([
    Document(uri=red, matches=[Document(text=t) for t in texts]),
    Document(text=texts[1], matches=[Document(uri=red), Document(uri=blue)]),
])
ranked = [[{"text": m.text, "uri": m.uri,
            "clip_score": m.scores["clip_score"].value,
            "clip_score_cosine": m.scores["clip_score_cosine"].value} for m in q.matches]
          for q in queries]
profile = client.profile()
with open(out, "w") as answer:
    json.dump({"encode": vectors.tolist(), "dtype": str(vectors.dtype), "rank": ranked,
               "profile": profile}, answer)
