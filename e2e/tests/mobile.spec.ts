import type { Page } from '@playwright/test';
import { test, expect, card, fillCard, openPayPage } from '../support/paylink';

const PHONE = { width: 390, height: 844 };
test.use({ viewport: PHONE, deviceScaleFactor: 3, isMobile: true, hasTouch: true });

/** Nothing sticks out sideways: the page cannot be scrolled horizontally. */
async function expectNoHorizontalScroll(page: Page): Promise<void> {
  const sizes = await page.evaluate(() => ({
    documentScrollWidth: document.documentElement.scrollWidth,
    bodyScrollWidth: document.body.scrollWidth,
    viewportWidth: window.innerWidth,
    clientWidth: document.documentElement.clientWidth,
  }));
  expect(sizes.viewportWidth).toBe(PHONE.width);
  expect(sizes.documentScrollWidth, JSON.stringify(sizes)).toBeLessThanOrEqual(sizes.viewportWidth);
  expect(sizes.bodyScrollWidth, JSON.stringify(sizes)).toBeLessThanOrEqual(sizes.viewportWidth);
  // Scrolling sideways does nothing.
  await page.evaluate(() => window.scrollTo(200, window.scrollY));
  expect(await page.evaluate(() => window.scrollX)).toBe(0);
}

/** The element lies entirely within the viewport's width. */
async function expectWithinWidth(page: Page, selector: string): Promise<void> {
  const elements = page.locator(selector);
  const count = await elements.count();
  expect(count, `${selector} exists`).toBeGreaterThan(0);
  for (let i = 0; i < count; i += 1) {
    const box = await elements.nth(i).boundingBox();
    expect(box, `${selector} #${i} is rendered`).not.toBeNull();
    expect(box!.x, `${selector} #${i} left edge`).toBeGreaterThanOrEqual(0);
    expect(box!.x + box!.width, `${selector} #${i} right edge`).toBeLessThanOrEqual(PHONE.width + 0.5);
  }
}

test('on a 390×844 phone the whole form fits the width and the pay button can be reached', async ({
  page,
  merchant,
}) => {
  // Worst case for the layout: the longest order id (128 characters, no spaces) and description.
  const orderId = `${merchant.uniqueOrderId()}-`.padEnd(128, 'x');
  const description = `${'Season-ticket-renewal-'.repeat(9)}`.slice(0, 200);
  const link = await merchant.createLink({ orderId, description, amount: 123456789012, currency: 'USD' });

  await openPayPage(page, link);
  await expectNoHorizontalScroll(page);
  for (const selector of ['h1', '[data-test=summary]', '[data-test=order-id]', '[data-test=amount]', 'label', 'input', '[data-test=pay-button]']) {
    await expectWithinWidth(page, selector);
  }

  const button = page.getByTestId('pay-button');
  await button.scrollIntoViewIfNeeded();
  await expect(button).toBeInViewport({ ratio: 1 });
  await expect(button).toBeVisible();
  await expect(button).toBeEnabled();
});

test('on a phone, the marked form and the receipt also fit, and a tap pays', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);

  // An invalid submission adds messages: still no sideways scrolling.
  await fillCard(page, card('1234'));
  const invalid = page.waitForResponse((r) => r.request().method() === 'POST');
  await page.getByTestId('pay-button').tap();
  expect((await invalid).status()).toBe(422);
  await expect(page.getByTestId('error-cardNumber')).toBeVisible();
  await expectNoHorizontalScroll(page);
  await expectWithinWidth(page, '.field-error, [data-test^=error-]');

  await fillCard(page, card());
  const button = page.getByTestId('pay-button');
  await button.scrollIntoViewIfNeeded();
  await expect(button).toBeInViewport({ ratio: 1 });
  const paid = page.waitForResponse((r) => r.request().method() === 'POST');
  await button.tap();
  expect((await paid).status()).toBe(200);
  await expect(page.getByTestId('receipt-title')).toHaveText('Payment successful');
  await expectNoHorizontalScroll(page);
});
