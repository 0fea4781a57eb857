// ThumbHash decoding, written from the format's public description (the encoder is
// services/thumbnail_worker/placeholder.py): a header with the DC terms and scales, then
// 4-bit AC coefficients of luminance (L), two chroma channels (P, Q) and maybe alpha (A),
// each over a triangle of low DCT frequencies.

export function decodeThumbHash(base64) {
  const hash = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const h24 = hash[0] | (hash[1] << 8) | (hash[2] << 16);
  const h16 = hash[3] | (hash[4] << 8);
  const hasAlpha = (h24 >> 23) & 1;
  const landscape = (h16 >> 15) & 1;
  const limit = hasAlpha ? 5 : 7;
  const lCount = h16 & 7;
  const lx = Math.max(3, landscape ? limit : lCount);
  const ly = Math.max(3, landscape ? lCount : limit);
  const ratio = (landscape ? limit : lCount) / (landscape ? lCount : limit);

  let index = 0;
  const start = hasAlpha ? 6 : 5;
  const nibble = () => (hash[start + (index >> 1)] >> ((index++ & 1) * 4)) & 15;
  const channel = (nx, ny, scale) => {
    const ac = [];
    for (let cy = 0; cy < ny; cy++)
      for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++) ac.push((nibble() / 7.5 - 1) * scale);
    return { nx, ny, ac };
  };
  // The 1.25 restores some of the saturation that 4-bit quantisation takes away.
  const L = { dc: (h24 & 63) / 63, ...channel(lx, ly, ((h24 >> 18) & 31) / 31) };
  const P = { dc: ((h24 >> 6) & 63) / 31.5 - 1, ...channel(3, 3, (((h16 >> 3) & 63) / 63) * 1.25) };
  const Q = { dc: ((h24 >> 12) & 63) / 31.5 - 1, ...channel(3, 3, (((h16 >> 9) & 63) / 63) * 1.25) };
  const A = hasAlpha
    ? { dc: (hash[5] & 15) / 15, ...channel(5, 5, (hash[5] >> 4) / 15) }
    : { dc: 1, nx: 0, ny: 0, ac: [] };

  const w = Math.round(ratio > 1 ? 32 : 32 * ratio);
  const h = Math.round(ratio > 1 ? 32 / ratio : 32);
  const rgba = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const at = (c) => sample(c, x / w, y / h, w, h);
      const l = at(L), p = at(P), q = at(Q), a = at(A);
      const b = l - (2 / 3) * p;
      const r = (3 * l - b + q) / 2;
      const i = (y * w + x) * 4;
      rgba.set([r, r - q, b, a].map((v) => 255 * Math.min(1, Math.max(0, v))), i);
    }
  }
  return { w, h, rgba };
}

// The channel's value at one pixel: its DC term plus every AC term's cosine product.
function sample({ dc, nx, ny, ac }, u, v, w, h) {
  let value = dc;
  let j = 0;
  for (let cy = 0; cy < ny; cy++) {
    const fy = 2 * Math.cos(Math.PI * cy * (v + 0.5 / h));
    for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++, j++)
      value += ac[j] * Math.cos(Math.PI * cx * (u + 0.5 / w)) * fy;
  }
  return value;
}

// A data: URL of the placeholder, for an <img> or a CSS background.
export function thumbHashToDataURL(base64) {
  const { w, h, rgba } = decodeThumbHash(base64);
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").putImageData(new ImageData(rgba, w, h), 0, 0);
  return canvas.toDataURL("image/png");
}
