import { defineConfig, devices } from '@playwright/test';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

// Which paylink the suite talks to, and with which merchant key.
//
// - PAYLINK_BASE_URL set: an already running paylink there; the suite starts nothing.
// - Otherwise http://localhost:3000. If nothing answers there (always in CI), the suite starts
//   the built binary itself with its own merchants file (merchant `qa`, "QA Shop"). Outside CI a
//   paylink already answering on :3000 is reused (reuseExistingServer) and the suite
//   uses PAYLINK_API_KEY, by default the demo merchant's key.
//
// The decision is made once, in the runner process, and handed to the workers through the
// environment (they inherit it, and load this file again).

const DEMO_API_KEY = 'demo_key_for_local_development_only';
const DEMO_MERCHANT_NAME = 'Demo Shop';
// Only for the paylink this suite starts itself, on loopback, for the length of a run.
const QA_API_KEY = 'paylink_e2e_qa_key_local_test_server_only';
const QA_MERCHANT_NAME = 'QA Shop';
// A second merchant only the dashboard spec uses, so its open-link count moves only with that
// spec's own actions while the other specs run in parallel.
const QA_DASHBOARD_API_KEY = 'paylink_e2e_dashboard_key_local_test_server_only';
const QA_ADMIN_TOKEN = 'paylink-e2e-admin-token-local-only';

const baseURL = (process.env.PAYLINK_BASE_URL ?? 'http://localhost:3000').replace(/\/+$/, '');
const isCI = !!process.env.CI;

function answersHealthz(url: string): boolean {
  // Synchronous on purpose: the config must be settled before Playwright reads it.
  const probe = `fetch(${JSON.stringify(`${url}/healthz`)}, { signal: AbortSignal.timeout(1500) })
    .then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1));`;
  const result = spawnSync(process.execPath, ['-e', probe], { timeout: 3000, stdio: 'ignore' });
  return result.status === 0;
}

if (!process.env.PAYLINK_E2E_SERVER) {
  let mode: 'own' | 'external';
  if (process.env.PAYLINK_BASE_URL) mode = 'external';
  else if (isCI) mode = 'own'; // a busy :3000 then fails loudly in the webServer step
  else mode = answersHealthz(baseURL) ? 'external' : 'own';
  process.env.PAYLINK_E2E_SERVER = mode;
  if (mode === 'own') {
    process.env.PAYLINK_E2E_API_KEY = QA_API_KEY;
    process.env.PAYLINK_E2E_MERCHANT_NAME = QA_MERCHANT_NAME;
    process.env.PAYLINK_E2E_DASHBOARD_API_KEY = QA_DASHBOARD_API_KEY;
    process.env.PAYLINK_E2E_DASHBOARD_MERCHANT = 'qa-dashboard';
    process.env.PAYLINK_E2E_ADMIN_TOKEN = QA_ADMIN_TOKEN;
  } else {
    // Against a running server: the dashboard spec needs its admin token, and reads the row of
    // the merchant whose key PAYLINK_API_KEY is (run it alone for exact counts).
    process.env.PAYLINK_E2E_ADMIN_TOKEN = process.env.PAYLINK_ADMIN_TOKEN ?? '';
    process.env.PAYLINK_E2E_DASHBOARD_API_KEY = process.env.PAYLINK_API_KEY || DEMO_API_KEY;
    process.env.PAYLINK_E2E_DASHBOARD_MERCHANT = process.env.PAYLINK_MERCHANT_ID ?? 'demo';
    const key = process.env.PAYLINK_API_KEY || DEMO_API_KEY;
    process.env.PAYLINK_E2E_API_KEY = key;
    // The display name can only be checked when known: given, or the demo merchant's.
    process.env.PAYLINK_E2E_MERCHANT_NAME =
      process.env.PAYLINK_MERCHANT_NAME ?? (key === DEMO_API_KEY ? DEMO_MERCHANT_NAME : '');
  }
}
const ownServer = process.env.PAYLINK_E2E_SERVER === 'own';

// Results of the embedded-store run and the Redis run are kept apart.
const label = ownServer ? (process.env.REDIS_URL ? 'redis' : 'embedded') : 'external';

// The suite's own paylink gets a merchants file of its own (never a merchants.toml lying in
// the checkout, never the demo fallback). Written by the runner process only, before it starts
// the server; workers just read the path.
const merchantsFile = path.join(tmpdir(), 'paylink-e2e', 'merchants.toml');
if (ownServer && !process.env.TEST_WORKER_INDEX) {
  mkdirSync(path.dirname(merchantsFile), { recursive: true });
  const digest = (key: string) => createHash('sha256').update(key, 'utf8').digest('hex');
  writeFileSync(
    merchantsFile,
    `# Written by e2e/playwright.config.ts for the paylink the browser suite starts.\n` +
      `[[merchant]]\nid = "qa"\nname = "${QA_MERCHANT_NAME}"\napi_key_sha256 = "${digest(QA_API_KEY)}"\n\n` +
      `[[merchant]]\nid = "qa-dashboard"\nname = "QA Dashboard"\napi_key_sha256 = "${digest(QA_DASHBOARD_API_KEY)}"\n`,
  );
}

const binary = path.resolve(
  __dirname,
  process.env.PAYLINK_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? '..', 'target', 'debug', 'paylink'),
);
const port = new URL(baseURL).port || '80';

const chromiumPath = process.env.PLAYWRIGHT_CHROMIUM_PATH;
const chromiumLaunch = chromiumPath
  ? {
      executablePath: chromiumPath,
      args: [
        '--no-sandbox', // Chromium refuses to start as root with its sandbox
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    }
  : {};

export default defineConfig({
  testDir: './tests',
  outputDir: `test-results/${label}`,
  fullyParallel: true,
  workers: 2,
  forbidOnly: isCI,
  retries: isCI ? 1 : 0,
  timeout: 30_000,
  expect: { timeout: 5_000 },
  reporter: [
    ['list'],
    ['html', { open: 'never', outputFolder: `playwright-report/${label}` }],
    ['json', { outputFile: `test-results/${label}.json` }],
  ],
  use: {
    baseURL,
    testIdAttribute: 'data-test',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    actionTimeout: 10_000,
    navigationTimeout: 15_000,
  },
  projects: [
    {
      name: 'chromium',
      use: { ...devices['Desktop Chrome'], launchOptions: chromiumLaunch },
    },
  ],
  webServer: process.env.PAYLINK_BASE_URL
    ? undefined
    : {
        command: JSON.stringify(binary),
        cwd: '..',
        url: `${baseURL}/healthz`,
        reuseExistingServer: !isCI,
        timeout: 30_000,
        // Only warnings and errors (RUST_LOG=warn), so a failed start explains itself.
        stdout: 'pipe',
        stderr: 'pipe',
        env: {
          PAYLINK_ADDR: `127.0.0.1:${port}`,
          PAYLINK_PUBLIC_URL: baseURL,
          PAYLINK_MERCHANTS: merchantsFile,
          PAYLINK_MIN_TTL_SECONDS: '1',
          PAYLINK_PAY_RATE_LIMIT_PER_MINUTE: '0',
          PAYLINK_API_RATE_LIMIT_PER_MINUTE: '0',
          PAYLINK_ADMIN_TOKEN: QA_ADMIN_TOKEN,
          PAYLINK_LOG_FORMAT: 'pretty',
          REDIS_URL: process.env.REDIS_URL ?? '',
          RUST_LOG: process.env.RUST_LOG ?? 'warn,tracing_actix_web=error',
        },
      },
});
