// Builds the gateway's static assets from npm packages (no CDN at run time). Run after `npm ci` in web/.
//   npm run build   copies the ECharts bundle to inkloop_gateway/static/vendor/ (git-ignored) and
//                   minifies the tracker tracker/hm.js with esbuild into inkloop_gateway/static/hm.js
//                   (committed: an installed gateway serves it without Node)
//   npm run check   fails unless the committed static/hm.js is exactly a fresh build of tracker/hm.js
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const staticDir = join(root, "services", "gateway", "inkloop_gateway", "static");
const trackerSource = join(here, "tracker", "hm.js");
const trackerOut = join(staticDir, "hm.js");

async function buildTracker() {
  const result = await build({
    entryPoints: [trackerSource],
    outfile: trackerOut,
    write: false,
    bundle: false,
    minify: true,
    // The source uses ES2021 (`||=`, `?.`); nothing is lowered.
    target: "es2021",
    charset: "utf8",
    legalComments: "none",
    // Private properties end with `_` (a batch's `inFlight_`) and are shortened too; every other
    // property name is wire format or browser API and stays as written.
    mangleProps: /_$/,
    logLevel: "warning",
  });
  return result.outputFiles[0].contents;
}

const tracker = await buildTracker();
if (process.argv.includes("--check")) {
  const committed = readFileSync(trackerOut);
  if (!committed.equals(tracker)) {
    console.error(
      `${relative(root, trackerOut)} is not a build of ${relative(root, trackerSource)}: run \`npm run build\` in web/ and commit it`,
    );
    process.exit(1);
  }
  console.log(`${relative(root, trackerOut)} is a fresh build of ${relative(root, trackerSource)}`);
} else {
  if (!existsSync(trackerOut) || !readFileSync(trackerOut).equals(tracker)) writeFileSync(trackerOut, tracker);
  console.log(`built ${relative(root, trackerOut)} (${tracker.length} bytes) from ${relative(root, trackerSource)}`);
  const vendor = join(staticDir, "vendor");
  mkdirSync(vendor, { recursive: true });
  copyFileSync(join(here, "node_modules", "echarts", "dist", "echarts.min.js"), join(vendor, "echarts.min.js"));
  console.log(`copied echarts.min.js to ${relative(root, vendor)}`);
}
