// Shared helpers for the browser specs: a merchant that creates links through the API, and
// the few payer actions every spec repeats. Each test gets its own merchant (and so its own
// links with unique order ids), so tests never share state and can run in any order.

import { test as base, expect, type APIRequestContext, type APIResponse, type Page, type Response, type TestInfo } from '@playwright/test';
import { randomBytes } from 'node:crypto';

/** A session as `GET /api/v1/sessions/{token}` shows it. */
export interface Session {
  token?: string;
  url?: string;
  status: 'open' | 'paid' | 'revoked' | 'expired';
  orderId: string;
  amount: number;
  currency: string;
  merchantId: string;
  description?: string | null;
  createdAt: string;
  expiresAt: string;
  paidAt?: string;
  revokedAt?: string;
  cardLast4?: string;
}

/** A freshly created, open link. */
export interface Link extends Session {
  token: string;
  url: string;
  /** Path of the payer page, relative to baseURL. */
  path: string;
}

export interface NewLink {
  orderId?: string;
  amount?: number;
  currency?: string;
  ttlSeconds?: number;
  description?: string;
}

/** The merchant whose API key the suite holds (see playwright.config.ts). */
export class Merchant {
  /** The display name payers should see; empty when unknown (a custom key without PAYLINK_MERCHANT_NAME). */
  readonly name = process.env.PAYLINK_E2E_MERCHANT_NAME ?? '';
  private readonly auth = { Authorization: `Bearer ${process.env.PAYLINK_E2E_API_KEY ?? ''}` };
  private counter = 0;

  constructor(
    private readonly request: APIRequestContext,
    private readonly testInfo: TestInfo,
  ) {}

  /** An order id no other test (or earlier run against the same server) uses. */
  uniqueOrderId(): string {
    const slug = this.testInfo.title.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
    this.counter += 1;
    return `e2e-${slug}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}-${this.counter}`;
  }

  async createLink(options: NewLink = {}): Promise<Link> {
    const body = {
      orderId: options.orderId ?? this.uniqueOrderId(),
      amount: options.amount ?? 1999,
      currency: options.currency ?? 'USD',
      ...(options.ttlSeconds !== undefined ? { ttlSeconds: options.ttlSeconds } : {}),
      ...(options.description !== undefined ? { description: options.description } : {}),
    };
    const response = await this.request.post('/api/v1/sessions', { headers: this.auth, data: body });
    await explainFailure(response, 201, 'creating a payment link');
    const link = (await response.json()) as Link;
    expect(link.token, 'token is 64 lowercase hex').toMatch(/^[0-9a-f]{64}$/);
    expect(link.url.endsWith(`/pay/${link.token}`), `url ${link.url} ends with /pay/<token>`).toBe(true);
    expect(link).toMatchObject({ status: 'open', orderId: body.orderId, amount: body.amount });
    // The payer page is reached through baseURL, whatever PAYLINK_PUBLIC_URL the server has.
    return { ...link, path: `/pay/${link.token}` };
  }

  async session(token: string): Promise<Session> {
    const response = await this.request.get(`/api/v1/sessions/${token}`, { headers: this.auth });
    await explainFailure(response, 200, 'reading a payment session');
    return (await response.json()) as Session;
  }

  revoke(token: string): Promise<APIResponse> {
    return this.request.delete(`/api/v1/sessions/${token}`, { headers: this.auth });
  }
}

async function explainFailure(response: APIResponse, expected: number, what: string): Promise<void> {
  if (response.status() === expected) return;
  const text = await response.text();
  let hint = '';
  if (response.status() === 401) {
    hint =
      '\nThe merchant API refused the key. Against a paylink you started yourself, set PAYLINK_API_KEY ' +
      '(default: the demo key, which only a server without a merchants file accepts).';
  } else if (response.status() === 422 && text.includes('ttlSeconds')) {
    hint = '\nThe expiry specs need short links: start the server with PAYLINK_MIN_TTL_SECONDS=1.';
  } else if (response.status() === 429) {
    hint = '\nRate limited: start the server with PAYLINK_API_RATE_LIMIT_PER_MINUTE=0 and PAYLINK_PAY_RATE_LIMIT_PER_MINUTE=0.';
  }
  throw new Error(`${what}: expected HTTP ${expected}, got ${response.status()}: ${text}${hint}`);
}

export const test = base.extend<{ merchant: Merchant }>({
  merchant: async ({ request }, use, testInfo) => {
    await use(new Merchant(request, testInfo));
  },
});

export { expect };

// ---------------------------------------------------------------------------------------
// Cards and the payer's form

export interface Card {
  cardholderName: string;
  cardNumber: string;
  expiry: string;
  cvc: string;
}

/** MM/YY a few years ahead of today, so the suite never ages into "expired card". */
export function futureExpiry(): string {
  return `12/${String((new Date().getFullYear() + 3) % 100).padStart(2, '0')}`;
}

/** MM/YY of a month that has certainly passed. */
export function pastExpiry(): string {
  return `01/${String((new Date().getFullYear() - 1) % 100).padStart(2, '0')}`;
}

export const CARDS = {
  approved: '4242 4242 4242 4242',
  declined: '4000 0000 0000 0002',
  insufficientFunds: '4000 0000 0000 9995',
} as const;

export function card(number: string = CARDS.approved, overrides: Partial<Card> = {}): Card {
  return { cardholderName: 'Ada Lovelace', cardNumber: number, expiry: futureExpiry(), cvc: '123', ...overrides };
}

/** Types into the form as a payer would (by field id; each has a <label for>). */
export async function fillCard(page: Page, details: Partial<Card>): Promise<void> {
  for (const name of ['cardholderName', 'cardNumber', 'expiry', 'cvc'] as const) {
    const value = details[name];
    if (value !== undefined) await page.locator(`#${name}`).fill(value);
  }
}

/**
 * Clicks the pay button and returns the response to the form's POST. The caller then asserts
 * on something only the new page has (a receipt, a decline reason, "Link Expired"), so the
 * assertion waits for that page rather than racing the old one.
 */
export async function submitPayment(page: Page, link: { path: string }): Promise<Response> {
  const posted = page.waitForResponse(
    (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === link.path,
  );
  await page.getByTestId('pay-button').click();
  const response = await posted;
  await page.waitForLoadState('domcontentloaded');
  return response;
}

/** Opens the payer page and checks it is the open form. */
export async function openPayPage(page: Page, link: { path: string }): Promise<Response> {
  const response = await page.goto(link.path);
  expect(response, 'a navigation response').not.toBeNull();
  expect(response!.status(), 'an open link answers 200').toBe(200);
  await expect(page.getByRole('heading', { name: 'Complete your payment' })).toBeVisible();
  return response!;
}

/** The page says the link is gone, as the 410 page does. */
export async function expectLinkExpired(page: Page, response: Response | null): Promise<void> {
  expect(response, 'a navigation response').not.toBeNull();
  expect(response!.status(), `${response!.request().method()} ${response!.url()} answers 410 Gone`).toBe(410);
  await expect(page.getByTestId('gone-title')).toHaveText('Link Expired');
  await expect(page.getByRole('heading', { name: 'Link Expired' })).toBeVisible();
  await expect(page.getByTestId('pay-form')).toHaveCount(0);
}

/** "USD 19.99" for 1999 USD: what the page shows for an amount. */
export function formatAmount(minorUnits: number, currency: string, exponent = 2): string {
  if (exponent === 0) return `${currency} ${minorUnits}`;
  const s = String(minorUnits).padStart(exponent + 1, '0');
  return `${currency} ${s.slice(0, -exponent)}.${s.slice(-exponent)}`;
}

/** "16:53:12 UTC": the expiry as the page prints it without JavaScript. */
export function clockTimeUtc(rfc3339: string): string {
  return `${new Date(rfc3339).toISOString().slice(11, 19)} UTC`;
}

/** Waits, on the test's clock, until the server-side instant `rfc3339` is `marginMs` behind us. */
export async function waitUntilPast(rfc3339: string, marginMs = 500): Promise<void> {
  const wait = Date.parse(rfc3339) + marginMs - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}

/**
 * What goes wrong inside a page while a test runs: console errors (CSP violations among them),
 * uncaught exceptions, and subresources (script, stylesheet) that fail to load. The browser's
 * own favicon probe is left out: paylink serves no favicon, and no page asks for one.
 */
export function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  const ignored = (url: string) => new URL(url).pathname === '/favicon.ico';
  page.on('console', (message) => {
    // "Failed to load resource" names no URL; the response handler below reports those.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      errors.push(`console: ${message.text()}`);
    }
  });
  page.on('pageerror', (error) => errors.push(`uncaught: ${String(error)}`));
  page.on('response', (response) => {
    if (response.status() >= 400 && !response.request().isNavigationRequest() && !ignored(response.url())) {
      errors.push(`HTTP ${response.status()}: ${response.url()}`);
    }
  });
  page.on('requestfailed', (request) => {
    if (!ignored(request.url())) errors.push(`failed: ${request.url()} ${request.failure()?.errorText ?? ''}`);
  });
  return errors;
}
