import { createRequire } from 'node:module';
import * as PImage from 'pureimage';
import { encodeGreyPng } from './png.ts';

const require = createRequire(import.meta.url);
const FONT_FILE = require.resolve('dejavu-fonts-ttf/ttf/DejaVuSans.ttf');
const FAMILY = 'StranglerScan';
let fontLoaded = false;

function loadFont(): void {
  if (fontLoaded) return;
  PImage.registerFont(FONT_FILE, FAMILY).loadSync();
  fontLoaded = true;
}

/**
 * Renders lines of text as a PNG "scan" (black DejaVu Sans on white) with no native code and no
 * network, so tests and the demo can make invoices to OCR offline.
 */
export function renderTextPng(lines: string[], fontSize = 32): Buffer {
  loadFont();
  const margin = Math.round(fontSize * 0.8);
  const lineHeight = Math.round(fontSize * 1.5);
  const longest = Math.max(1, ...lines.map((l) => l.length));
  const width = margin * 2 + Math.ceil(longest * fontSize * 0.62);
  const height = margin * 2 + Math.max(1, lines.length) * lineHeight;
  const image = PImage.make(width, height);
  const ctx = image.getContext('2d');
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = '#000000';
  ctx.font = `${fontSize}px ${FAMILY}`;
  lines.forEach((line, i) => ctx.fillText(line, margin, margin + (i + 1) * lineHeight - Math.round(fontSize * 0.4)));
  const grey = new Uint8Array(width * height);
  for (let p = 0; p < grey.length; p++) {
    const o = p * 4;
    grey[p] = Math.round(0.299 * image.data[o] + 0.587 * image.data[o + 1] + 0.114 * image.data[o + 2]);
  }
  return encodeGreyPng(width, height, grey);
}
