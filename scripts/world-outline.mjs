// Makes src/http/console/assets/world.svg, the outline of the world the
// console's device map is drawn on, from the npm package world-atlas (ISC;
// Natural Earth's public-domain 1:110m land). Run once, by hand, when the
// outline is to change; the console needs nothing of this at run time:
//
//   dir=$(mktemp -d) && (cd "$dir" && npm init -y >/dev/null &&
//     npm install --no-audit --no-fund world-atlas@2.0.2 topojson-client@3.1.0) &&
//   node scripts/world-outline.mjs "$dir" > src/http/console/assets/world.svg

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const modules = path.join(process.argv[2] ?? ".", "node_modules");
const require = createRequire(path.join(modules, "index.js"));
const { feature } = require("topojson-client");
const topo = JSON.parse(readFileSync(path.join(modules, "world-atlas/land-110m.json"), "utf8"));
const land = feature(topo, topo.objects.land);
const round = (value) => Math.round(value * 10) / 10;
let d = "";
// One ring as path data, x = longitude and y = -latitude, points that
// round to the one before left out.
function ring(points) {
  let previous = null;
  let out = "";
  for (const [lon, lat] of points) {
    const point = [round(lon), round(-lat)];
    if (previous && point[0] === previous[0] && point[1] === previous[1]) continue;
    out += (previous ? "L" : "M") + point[0] + " " + point[1];
    previous = point;
  }
  return out + "Z";
}
// Rings that cross the antimeridian are made continuous (longitudes past
// ±180) and drawn again shifted by 360°, the outline's viewBox cutting them
// at the edge; a ring around a pole (Antarctica's) is closed along it.
function unwrap(points) {
  const out = [];
  let offset = 0;
  let previous = null;
  for (const [lon, lat] of points) {
    if (previous !== null) {
      const step = lon + offset - previous;
      if (step > 180) offset -= 360;
      else if (step < -180) offset += 360;
    }
    previous = lon + offset;
    out.push([previous, lat]);
  }
  const first = out[0], last = out[out.length - 1];
  if (Math.abs(last[0] - first[0]) > 180) {
    const pole = first[1] < 0 ? -90 : 90;
    out.push([last[0], pole], [first[0], pole]);
  }
  return out;
}
for (const { geometry } of land.features) {
  const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
  for (const rings of polygons) for (const points of rings.map(unwrap)) {
    const lons = points.map(([lon]) => lon);
    const [min, max] = [Math.min(...lons), Math.max(...lons)];
    for (const shift of [-360, 0, 360]) {
      if (max + shift <= -180 || min + shift >= 180) continue;
      d += ring(points.map(([lon, lat]) => [lon + shift, lat]));
    }
  }
}
// "L1 -2" is "L1-2" in SVG's path grammar.
d = d.replace(/ -/g, "-");
const svg = `<?xml version="1.0" encoding="UTF-8"?>
<!-- The land of the world, equirectangular (x = longitude, y = -latitude), made by
     scripts/world-outline.mjs from world-atlas 2.0.2 land-110m.json, itself made
     from Natural Earth's 1:110m land (public domain); coordinates rounded to 0.1°.

     world-atlas: Copyright 2013-2019 Michael Bostock

     Permission to use, copy, modify, and/or distribute this software for any purpose
     with or without fee is hereby granted, provided that the above copyright notice
     and this permission notice appear in all copies.

     THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH
     REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND
     FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT,
     INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS
     OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER
     TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF
     THIS SOFTWARE. -->
<svg xmlns="http://www.w3.org/2000/svg" viewBox="-180 -90 360 180" width="360" height="180">
<path fill="#d9dee6" stroke="#aab3c0" stroke-width="0.2" stroke-linejoin="round" d="${d}"/>
</svg>
`;
process.stdout.write(svg);
