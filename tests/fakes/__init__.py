"""Fake providers and fake vendor servers used by the tests.

Each fake speaks its vendor's contract (PROVIDERS.md) as strictly as the vendor where the sources say what the
vendor refuses: shut-down and unknown models, bad sizes, missing or malformed required fields. Where a fake is
still more lenient than the vendor (kept short on purpose; each is either undocumented or beyond what aigen
sends), it is listed here:

* ComfyUI (comfyui_fake): only the node classes aigen's templates and tests use exist (others are refused as
  unknown, which is stricter than a server with custom nodes); a number's `step` is not checked; the cache is
  for a whole graph (ComfyUI's classic cache also re-runs only the nodes that changed); the queue advances on
  each `GET /history/{id}` instead of by a worker thread; no `/ws`, `/interrupt`, `/object_info` or `/api/jobs`;
  an image's colour, not its content, follows the seed and the prompt.
* OpenAI (openai_fake): moderation is simulated only by the word BLOCKME; rate limits, quota and 5xx only when
  scripted; `OpenAI-Organization` / `OpenAI-Project` are not checked; the gpt-image-2.6 models get the gpt-image-2
  size rules though the sources list those rules only for 2 and 2.5; `stream` / `partial_images` are accepted but
  never streamed; n > 1 with SVG output is not refused; the 404 status of `model_not_found` is not verified.
* Pictory (pictory_fake): any numeric speaker id is accepted and names are checked against the few voices the docs
  name, not the account's GET /v1/voiceovers/tracks list; a voice's language is not matched against `language`;
  `backgroundMusic`, `logo`, `subtitleStyle` and scene fields other than `story` are not validated; no 429 or
  credit exhaustion unless scripted; its mp4 has no audio track, so a silent render is flagged on the job
  (`Job.voice_missing`) rather than detectable in the file.
* Runway (runway_fake): only the models aigen uses are known (others are refused, which is stricter); unknown body
  fields are ignored (Runway's handling is undocumented); THROTTLED and the daily-quota 429 only when scripted;
  `estimatedCost` / `cost` are fixed numbers.
* fal (fal_fake): only the models in aigen's table plus two pass-through ones are served (others are 404, which is
  stricter); inputs outside a known model's documented fields are refused (fal's handling of extra fields is
  undocumented); what a cancelled request's status and result show is not confirmed by any source (the fake says
  COMPLETED with `error_type: request_cancelled`, and 400); no 403 balance error, 429 or 5xx unless scripted;
  outputs are one fixed mp4 and a PNG of the asked size.
* Google (gemini_fake): only the models aigen lists are known (newer names are refused, which is stricter); fields
  aigen never sends are not validated; the exact texts of Google's errors are the commonly seen ones, not confirmed;
  the Omni Flash `response_format.duration` format ("5s") is inferred from the SDK's string type; rate limits, 5xx
  and slow answers only when scripted; a `storageUri` is trusted to be a bucket the caller may write.
* Stability (stability_fake): the legacy `sd3-large`, `sd3-large-turbo`, `sd3-medium` names are accepted (not
  confirmed for 2026); the output size follows the aspect ratio but not each model's real resolution; the 10 MiB
  body limit (413), 402 and 429 only when scripted; `image` uploads are not decoded.
"""
