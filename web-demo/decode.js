// How the demo pages turn an image file into the pixels transformers.js hands the model, in a page or a worker.
//
// Decoding is the browser's own, exactly as stock transformers.js' RawImage.fromBlob does it (createImageBitmap:
// EXIF orientation applied, an embedded colour profile converted to sRGB; then a canvas). Two things are added:
//   - a pixel limit (DEFAULT_MAX_PIXELS, the same default as Python's distilvit/limits.py), checked on the
//     decoded size before any pixel is copied out;
//   - the model's block reduction done here rather than in the graph: an axis of 6 x size pixels or more is
//     averaged over whole blocks of f = length // (3 size) pixels (centred; at most f - 1 pixels left over are
//     dropped), over white, as distilvit/pixels.py `reduction` and export/pixel_graph.py do. The canvas is read a
//     strip of block rows at a time, so a 12-megapixel photo never becomes a 190 MB float tensor: transformers.js
//     gets an RGB image of 3 x size to 6 x size - 1 pixels a side, its block means kept as float32 (rounding them
//     to 8 bits cost a third of the same-pixels target's mean), and the graph then reduces by 1. An image below that size is handed over as RawImage.fromBlob would, untouched.
// `size` is the model's input size (export_config.json `pixels.size`); 0 turns the reduction off (exports made
// before it, whose graphs do not reduce). This module knows nothing about models or captions.
import { RawImage } from './vendor/transformers.min.js';

export const DEFAULT_MAX_PIXELS = 50_000_000;
export const REDUCE_GAP = 3;
const STRIP_PIXELS = 4_000_000; // canvas pixels read per strip (16 MB of RGBA)

export class ImageTooLarge extends Error {}

/** [factor, kept, start] of an image axis of `length` pixels: distilvit.pixels.reduction. */
export function reduction(length, size) {
  const factor = size > 0 ? Math.max(1, Math.floor(length / (REDUCE_GAP * size))) : 1;
  const kept = Math.floor(length / factor) * factor;
  return [factor, kept, Math.floor((length - kept) / 2)];
}

/** RawImage of `blob` for a model of input `size` (see above); ImageTooLarge over `maxPixels`. */
export async function decodeForModel(blob, size, maxPixels = DEFAULT_MAX_PIXELS) {
  const bitmap = await createImageBitmap(blob);
  try {
    const { width, height } = bitmap;
    if (maxPixels && width * height > maxPixels) {
      throw new ImageTooLarge(`This image has ${width} x ${height} = ${(width * height).toLocaleString('en')} pixels, `
        + `over the limit of ${maxPixels.toLocaleString('en')}; shrink it first.`);
    }
    const [fh, kh, top] = reduction(height, size);
    const [fw, kw, left] = reduction(width, size);
    if (fh === 1 && fw === 1) { // what RawImage.fromBlob returns
      const ctx = new OffscreenCanvas(width, height).getContext('2d', { willReadFrequently: true });
      ctx.drawImage(bitmap, 0, 0);
      return new RawImage(ctx.getImageData(0, 0, width, height).data, width, height, 4);
    }
    return reduced(bitmap, { fh, kh, top, fw, kw, left });
  } finally {
    bitmap.close();
  }
}

function reduced(bitmap, { fh, kh, top, fw, kw, left }) {
  const outW = kw / fw, outH = kh / fh, count = fh * fw;
  const out = new Float32Array(outW * outH * 3); // transformers.js takes any typed array (Float32Array.from)
  const sums = new Float64Array(outW * 3);
  const blockRows = Math.max(1, Math.floor(STRIP_PIXELS / (kw * fh)));
  const ctx = new OffscreenCanvas(kw, blockRows * fh).getContext('2d', { willReadFrequently: true });
  for (let row0 = 0; row0 < outH; row0 += blockRows) {
    const rows = Math.min(blockRows, outH - row0);
    ctx.clearRect(0, 0, kw, rows * fh);
    ctx.drawImage(bitmap, left, top + row0 * fh, kw, rows * fh, 0, 0, kw, rows * fh); // 1:1, a copy
    const data = ctx.getImageData(0, 0, kw, rows * fh).data;
    for (let r = 0; r < rows; r++) {
      sums.fill(0);
      for (let y = r * fh; y < (r + 1) * fh; y++) {
        let i = y * kw * 4;
        for (let x = 0; x < kw; x++, i += 4) {
          const a = data[i + 3] / 255, white = 255 * (1 - a), o = Math.floor(x / fw) * 3;
          sums[o] += data[i] * a + white; // over white, as the graph composites
          sums[o + 1] += data[i + 1] * a + white;
          sums[o + 2] += data[i + 2] * a + white;
        }
      }
      const base = (row0 + r) * outW * 3;
      for (let k = 0; k < outW * 3; k++) out[base + k] = sums[k] / count;
    }
  }
  return new RawImage(out, outW, outH, 3);
}

/** The input size an export's graph reduces for (export_config.json `pixels.size`), or 0 for an export made
 * before the reduction (its graph resizes the whole image, so the page must hand it over whole). */
export async function reductionSizeOf(modelPath) {
  const response = await fetch(`/models/${modelPath}/export_config.json`);
  if (!response.ok) throw new Error(`/models/${modelPath}/export_config.json: HTTP ${response.status}`);
  const pixels = (await response.json()).pixels ?? {};
  return pixels.reduce ? Number(pixels.size) : 0;
}
