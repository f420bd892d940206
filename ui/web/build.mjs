// Builds the UI: node build.mjs [--outdir DIR] (default dist/)
// writes DIR/index.html, DIR/assets/app.js and DIR/assets/app.css (minified).
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let outdir = join(here, "dist");
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--outdir" && args[i + 1]) outdir = resolve(args[++i]);
  else if (a.startsWith("--outdir=")) outdir = resolve(a.slice("--outdir=".length));
  else {
    console.error(`usage: node build.mjs [--outdir DIR]   (unknown argument: ${a})`);
    process.exit(2);
  }
}

const assets = join(outdir, "assets");
await rm(assets, { recursive: true, force: true });
await mkdir(assets, { recursive: true });
const result = await build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.ts" },
  outdir: assets,
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  legalComments: "none",
  logLevel: "warning",
  metafile: true,
});
await copyFile(join(here, "src", "index.html"), join(outdir, "index.html"));
for (const [file, info] of Object.entries(result.metafile.outputs)) {
  console.log(`${file.replace(/^.*?assets\//, "assets/")}  ${(info.bytes / 1024).toFixed(1)} KiB`);
}
console.log(`built ${outdir}`);
