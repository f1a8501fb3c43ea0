// Which onnxruntime-web build a page loads, by device. WebGPU needs the asyncify build (27 MB, WebGPU and WASM);
// WebAssembly alone runs on the plain build (14 MB), which stock transformers.js loads through `wasmPaths` and which
// compiled sooner and captioned faster in Chromium, alternated with the asyncify one (docs/browser.md, "Where the
// time goes"). onnxruntime-web reads this once, at its first session: one device per page or worker.
export function wasmPathsFor(device, base = import.meta.url) { // vendor/ beside this file, wherever the page is
  if (device === 'webgpu') return new URL('./vendor/', base).href; // onnxruntime-web names its asyncify files itself
  return {
    mjs: new URL('./vendor/ort-wasm-simd-threaded.mjs', base).href,
    wasm: new URL('./vendor/ort-wasm-simd-threaded.wasm', base).href,
  };
}
