// Caption images with stock transformers.js in Node, offline, from an exported distilvit-web folder.
// Input (stdin, JSON): {model_dir, layout: "pipeline"|"llava", dtype, images: [paths], max_new_tokens}
// Output (stdout, JSON): {load_ms, results: [{image, caption, ms}]}
// It knows nothing about PyTorch: it is the client a user's page or app runs.
import { readFileSync } from 'node:fs';
import { pipeline, AutoProcessor, AutoModelForImageTextToText, RawImage } from '@huggingface/transformers';
import { useLocalModel } from './offline.mjs';

const request = JSON.parse(readFileSync(0, 'utf8'));
const modelId = useLocalModel(request.model_dir);
const options = { dtype: request.dtype, device: 'cpu' };
const maxNewTokens = request.max_new_tokens;

const results = [];
let started = performance.now();
if (request.layout === 'pipeline') {
  const captioner = await pipeline('image-to-text', modelId, options);
  const loadMs = performance.now() - started;
  for (const image of request.images) {
    const t0 = performance.now();
    const [out] = await captioner(image, { max_new_tokens: maxNewTokens });
    results.push({ image, caption: out.generated_text.trim(), ms: performance.now() - t0 });
  }
  process.stdout.write(JSON.stringify({ load_ms: loadMs, results }));
} else {
  const processor = await AutoProcessor.from_pretrained(modelId);
  const model = await AutoModelForImageTextToText.from_pretrained(modelId, options);
  const loadMs = performance.now() - started;
  const prompt = '<image>' + processor.tokenizer.bos_token;
  for (const image of request.images) {
    const t0 = performance.now();
    const inputs = await processor(await RawImage.read(image), prompt, { add_special_tokens: false });
    const output = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false });
    const promptLength = inputs.input_ids.dims[1];
    const generated = output.slice(null, [promptLength, null]);
    const [caption] = processor.batch_decode(generated, { skip_special_tokens: true });
    results.push({ image, caption: caption.trim(), ms: performance.now() - t0 });
  }
  process.stdout.write(JSON.stringify({ load_ms: loadMs, results }));
}
