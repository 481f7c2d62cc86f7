// The dashboard in headless Chromium: every page opens and is screenshotted; the saga list
// filters; a compensated saga's timeline has compensation bars; a parked order is cancelled
// from its page (confirming the dialog) and becomes compensated; a dead letter is replayed; a
// blog post's flow shows as a timeline.
//
// Usage: node dashboard.mjs   with BASE (the server), COMPENSATED, COMPLETED, PARKED (saga ids),
// FLOW (a correlation id),
// SHOTS (the screenshot directory) and CHROMIUM (default /usr/bin/chromium) in the environment.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const base = env("BASE");
const shots = env("SHOTS");
mkdirSync(shots, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function until(what, fn, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return console.log(`ok - ${what}`);
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("dialog", (d) => d.accept());
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  // Overview, and the keyboard reaches the skip link first.
  await page.goto(`${base}/`);
  check((await page.locator("h1").textContent()) === "Overview", "the overview opens");
  check(await page.getByRole("heading", { name: /Stuck sagas/ }).isVisible(), "it lists stuck sagas");
  await page.keyboard.press("Tab");
  check((await page.evaluate(() => document.activeElement?.className)) === "skip", "Tab reaches the skip link");
  await shot("overview");

  // The list, filtered by status through the form.
  await page.goto(`${base}/ui/sagas`);
  await page.getByLabel("Status").selectOption("compensated");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/status=compensated/);
  const rows = await page.locator("#saga-rows").textContent();
  check(rows.includes(env("COMPENSATED")), "the filter keeps the compensated saga");
  check(!rows.includes(env("COMPLETED")), "the filter drops the completed one");
  await shot("sagas-filtered");

  // A compensated saga: compensation bars in its timeline.
  await page.goto(`${base}/ui/sagas/${env("COMPENSATED")}`);
  const bars = await page.locator("svg.timeline rect.bar.compensation").count();
  check(bars > 0, `the timeline shows ${bars} compensation bar(s)`);
  check((await page.locator("svg.timeline .pivot-mark").count()) === 1, "the pivot is marked");
  await shot("saga-compensated");

  // A parked order, cancelled from the page.
  const parked = `${base}/ui/sagas/${env("PARKED")}`;
  await page.goto(parked);
  check(await page.locator(".badge.waiting").first().isVisible(), "the order waits");
  await page.getByRole("button", { name: "Cancel saga" }).click();
  await page.waitForURL(/ok=1/);
  check(await page.getByText("Cancel accepted").isVisible(), "the engine accepted the cancel");
  await until("the cancelled order becomes compensated", async () => {
    await page.goto(parked);
    return (await page.locator("dd .badge.compensated").count()) > 0;
  });
  await shot("saga-cancelled");

  // A dead letter, replayed.
  await page.goto(`${base}/ui/dead-letters`);
  const boxes = page.locator("input[type=checkbox][name=id]");
  check((await boxes.count()) > 0, "a dead letter is listed");
  await shot("dead-letters");
  await boxes.first().check();
  await page.getByRole("button", { name: "Replay selected" }).click();
  await page.waitForURL(/msg=/);
  check(await page.getByText(/Replayed 1 of 1/).isVisible(), "the dead letter was replayed");

  // The blog post's flow, as one timeline.
  await page.goto(`${base}/ui/flows`);
  await page.getByRole("link", { name: env("FLOW") }).click();
  await until("the flow shows its services' handlings", async () => {
    await page.reload();
    return (await page.locator("svg.timeline circle.dot.handled").count()) > 0;
  });
  check((await page.locator("svg.timeline g.lane").count()) >= 2, "the flow has a lane per service");
  await shot("flow");

  for (const [path, name, heading] of [
    ["/ui/definitions", "definitions", "Definitions"],
    ["/ui/flows", "flows", "Flows"],
  ]) {
    await page.goto(`${base}${path}`);
    check((await page.locator("h1").textContent()) === heading, `${heading} opens`);
    await shot(name);
  }
  console.log("all dashboard checks passed");
} finally {
  await browser.close();
}
