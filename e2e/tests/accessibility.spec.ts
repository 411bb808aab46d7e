import AxeBuilder from '@axe-core/playwright';
import type { Page } from '@playwright/test';
import { randomBytes } from 'node:crypto';
import {
  test,
  expect,
  CARDS,
  card,
  expectLinkExpired,
  fillCard,
  openPayPage,
  submitPayment,
} from '../support/paylink';

/** Runs axe over the whole page; any serious or critical violation fails, listed readably. */
async function expectNoSeriousViolations(page: Page, what: string): Promise<void> {
  const results = await new AxeBuilder({ page }).analyze();
  const serious = results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  expect(serious, `serious/critical axe violations on the ${what}`).toEqual([]);
}

test('the pay page has no serious accessibility violation', async ({ page, merchant }) => {
  const link = await merchant.createLink({ description: 'Accessibility check' });
  await openPayPage(page, link);
  await expect(page.getByTestId('countdown')).toHaveText(/Time left/);
  await expectNoSeriousViolations(page, 'pay page');

  // Every input has a visible label that names it.
  for (const [id, name] of [
    ['cardholderName', /name/i],
    ['cardNumber', /card number/i],
    ['expiry', /expir/i],
    ['cvc', /cvc|security code/i],
  ] as const) {
    await expect(page.locator(`#${id}`)).toHaveAccessibleName(name);
    await expect(page.locator(`label[for=${id}]`)).toBeVisible();
  }
  await expect(page.locator('html')).toHaveAttribute('lang', /^en/);
});

test('the pay page with marked fields and with a decline has no serious accessibility violation', async ({
  page,
  merchant,
}) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  expect((await submitPayment(page, link)).status()).toBe(422);
  await expect(page.getByTestId('form-error')).toBeVisible();
  await expectNoSeriousViolations(page, 'pay page with marked fields');

  await fillCard(page, card(CARDS.declined));
  expect((await submitPayment(page, link)).status()).toBe(402);
  await expect(page.getByTestId('decline-reason')).toBeVisible();
  await expectNoSeriousViolations(page, 'pay page after a decline');
});

test('the expired pay page (countdown at zero) has no serious accessibility violation', async ({ page, merchant }) => {
  test.setTimeout(60_000);
  const link = await merchant.createLink({ ttlSeconds: 3 });
  await openPayPage(page, link);
  await expect(page.getByTestId('expired-message')).toBeVisible({ timeout: 15_000 });
  await expectNoSeriousViolations(page, 'pay page after the countdown ran out');
});

test('the receipt page has no serious accessibility violation', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  await fillCard(page, card());
  expect((await submitPayment(page, link)).status()).toBe(200);
  await expect(page.getByTestId('receipt-title')).toBeVisible();
  await expectNoSeriousViolations(page, 'receipt page');
});

test('the "Link Expired" page has no serious accessibility violation', async ({ page }) => {
  await expectLinkExpired(page, await page.goto(`/pay/${randomBytes(32).toString('hex')}`));
  await expectNoSeriousViolations(page, '"Link Expired" page');
});
