// Copies the npm-installed ECharts bundle next to the gateway's static files (no CDN at run time).
// Run after `npm ci` in web/: `npm run build`.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "services", "gateway", "inkloop_gateway", "static", "vendor");
mkdirSync(vendor, { recursive: true });
copyFileSync(join(here, "node_modules", "echarts", "dist", "echarts.min.js"), join(vendor, "echarts.min.js"));
console.log(`copied echarts.min.js to ${vendor}`);
