// The page: picks model, dtype and device from what the server offers, takes an image (file, drop, paste,
// sample), and shows the caption and its time. The model itself runs in worker.js.
const $ = (id) => document.getElementById(id);
let worker = null; // one per device: each loads its own onnxruntime-web build (wasm-build.js)
let workerDevice = null;
let models = [];
let ready = false;
let loadId = 0; // answers to an older load are ignored
let pending = null; // image waiting for the model to load
let captionId = 0; // answers to an older caption are ignored: a late answer never lands under a newer image
let loadMs = null; // the current model's load time, shown beside each caption's time
let runsOn = ''; // where the current model runs: 'WebGPU' or 'WASM, N threads'
let loadFailed = null; // why the current model did not load (an image given then is refused with it, not kept waiting)
let inFlight = null; // the image being captioned: captioned again by the next worker if this one is replaced
let previewUrl = null; // the shown image's object URL, released when the next image replaces it

// What the page shows when the model's first token is its end of text (a caption of no words).
const NO_CAPTION = 'The model gave no caption for this image.';

function status(text) { $('status').textContent = text; }
function showError(text) { $('error').textContent = text; $('error').hidden = !text; }

function onMessage({ data }) {
  if (data.type === 'progress') {
    if (data.id !== loadId || ready) return; // a late file event after 'ready' must not bring the bar back
    $('progress').hidden = false;
    $('progress-bar').style.width = `${Math.round(data.progress ?? 0)}%`;
    $('progress-text').textContent = `${data.file} ${Math.round(data.progress ?? 0)}%`;
  } else if (data.type === 'ready') {
    if (data.id !== loadId) return;
    ready = true;
    loadMs = data.ms;
    runsOn = data.device === 'webgpu' ? 'WebGPU' : `WASM, ${data.threads} thread${data.threads === 1 ? '' : 's'}`;
    $('progress').hidden = true;
    // WebAssembly threads need a cross-origin isolated page; say why a page elsewhere uses one core
    $('note').hidden = data.device === 'webgpu' || data.isolated;
    status(`Model loaded in ${(data.ms / 1000).toFixed(1)} s (${runsOn}).`);
    if (pending) { const image = pending; pending = null; caption(image); }
  } else if (data.type === 'caption') {
    if (data.id !== captionId) return;
    inFlight = null;
    $('progress').hidden = true;
    const text = data.text.trim();
    $('caption').textContent = text || NO_CAPTION; // never an empty line under the image
    $('caption').classList.toggle('no-caption', !text);
    $('timing').textContent = `(caption ${Math.round(data.ms)} ms on ${runsOn}; model load ${(loadMs / 1000).toFixed(1)} s, once)`;
    status('');
  } else if (data.type === 'error') {
    if ((data.kind === 'load' && data.id !== loadId) || (data.kind === 'caption' && data.id !== captionId)) return;
    if (data.kind === 'load') { loadFailed = data.message; pending = null; }
    if (data.kind === 'caption') inFlight = null;
    $('progress').hidden = true;
    showError(data.message);
    status('');
  }
}

function workerFor(device) {
  if (worker && workerDevice === device) return worker;
  if (worker) worker.terminate(); // its model and memory go with it
  if (inFlight) { pending = inFlight; inFlight = null; } // a caption it was making: the new worker makes it
  worker = new Worker('worker.js', { type: 'module' });
  worker.onmessage = onMessage;
  workerDevice = device;
  return worker;
}

function load() {
  const model = models.find((m) => m.name === $('model').value);
  if (!model) return;
  const choice = $('dtype').value;
  // 'mix': the per-graph dtypes the export's config.json names (default_dtype is then {graph: dtype})
  const dtype = choice === 'mix' ? model.default_dtype : choice;
  if (choice !== 'mix' && !model.dtypes.includes(dtype)) { showError(`${model.name} has no ${dtype} files.`); return; }
  const device = $('device').value;
  if (device === 'webgpu' && !navigator.gpu) { showError('This browser has no WebGPU; choose WASM.'); return; }
  ready = false;
  loadFailed = null;
  showError('');
  status(`Loading ${model.name} (${choice === 'mix' ? Object.values(dtype).join('/') : dtype}, ${device})...`);
  workerFor(device).postMessage({ type: 'load', id: ++loadId, model: model.path ?? model.name, layout: model.layout, dtype, device,
    reduceSize: model.reduce_size ?? 0 });
}

function fillDtypes() {
  const model = models.find((m) => m.name === $('model').value);
  // what the model knows, from its export (export_config.json's trained_on): a shapes model is not for photos
  $('trained-on').textContent = model.trained_on ? `This model was trained on ${model.trained_on}.` : '';
  $('trained-on').hidden = !model.trained_on;
  // WebGPU: the device default (q4f16, fp16, q4 first: WebGPU wants 4-bit or half precision); WASM: the export's
  const webgpu = $('device').value === 'webgpu';
  const gpuPick = ['q4f16', 'fp16', 'q4', 'fp32'].find((d) => model.dtypes.includes(d));
  const pick = webgpu && gpuPick ? gpuPick : model.default_dtype;
  const options = model.dtypes.map((d) => new Option(d, d, d === pick, d === pick));
  if (typeof model.default_dtype === 'object' && !(webgpu && gpuPick)) {  // a per-graph mix: offered first, chosen by default
    const label = 'mix: ' + Object.entries(model.default_dtype).map(([g, d]) => `${g} ${d}`).join(', ');
    options.unshift(new Option(label, 'mix', true, true));
  }
  $('dtype').replaceChildren(...options);
}

function caption(blob) {
  showError('');
  if (!blob.type.startsWith('image/')) { showError(`"${blob.name ?? 'That file'}" is not an image.`); return; }
  if (previewUrl) URL.revokeObjectURL(previewUrl); // the image it showed is gone from the page
  previewUrl = URL.createObjectURL(blob);
  $('preview').src = previewUrl;
  $('result').hidden = false;
  $('caption').textContent = '';
  $('caption').classList.remove('no-caption');
  $('timing').textContent = '';
  if (!ready) {
    if (loadFailed) { showError(`The model did not load (${loadFailed}); choose another model, dtype or device.`); return; }
    pending = blob; status('Waiting for the model...'); return;
  }
  status('Captioning...');
  inFlight = blob;
  worker.postMessage({ type: 'caption', id: ++captionId, image: blob });
}

async function start() {
  if (!navigator.gpu) $('device').querySelector('[value=webgpu]').disabled = true;
  try {
    models = (await (await fetch('models/index.json')).json()).models;
  } catch {
    models = [];
  }
  if (!models.length) {
    showError('No model is served. Start the server with an export: distilvit-web serve exports/tiny');
    return;
  }
  $('model').replaceChildren(...models.map((m) => new Option(`${m.name} (${m.layout})`, m.name)));
  fillDtypes();
  $('model').onchange = () => { fillDtypes(); load(); };
  $('dtype').onchange = load;
  $('device').onchange = () => { fillDtypes(); load(); };
  $('file').onchange = (e) => {
    if (e.target.files[0]) caption(e.target.files[0]);
    e.target.value = ''; // choosing the same file again must caption again
  };
  const drop = $('drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); e.dataTransfer.files[0] && caption(e.dataTransfer.files[0]); };
  document.onpaste = (e) => { const f = [...e.clipboardData.files][0]; if (f) caption(f); };
  for (const name of ['example-0.png', 'example-1.png', 'example-2.png', 'example-3.png']) {
    const button = document.createElement('button');
    button.innerHTML = `<img src="samples/${name}" alt="sample ${name}">`;
    button.onclick = async () => caption(await (await fetch(`samples/${name}`)).blob());
    $('samples').append(button);
  }
  load();
}

start();
