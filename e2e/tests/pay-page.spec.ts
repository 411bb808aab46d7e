import {
  test,
  expect,
  clockTimeUtc,
  collectPageErrors,
  formatAmount,
  openPayPage,
} from '../support/paylink';

/** "Time left: 14:58" → 898 */
function secondsLeft(text: string): number {
  const match = /Time left: (\d+):(\d\d)$/.exec(text.trim());
  if (!match) throw new Error(`not a countdown: ${JSON.stringify(text)}`);
  return Number(match[1]) * 60 + Number(match[2]);
}

test('a fresh link shows "Complete your payment" with merchant, order and amount', async ({ page, merchant }) => {
  const errors = collectPageErrors(page);
  const link = await merchant.createLink({ amount: 1999, currency: 'USD', description: '2 tickets, row F' });

  await openPayPage(page, link);
  await expect(page).toHaveTitle(/Complete your payment/);
  if (merchant.name) await expect(page.getByTestId('merchant')).toHaveText(merchant.name);
  else await expect(page.getByTestId('merchant')).not.toBeEmpty();
  await expect(page.getByTestId('order-id')).toHaveText(link.orderId);
  await expect(page.getByTestId('description')).toHaveText('2 tickets, row F');
  await expect(page.getByTestId('amount')).toHaveText('USD 19.99');
  await expect(page.getByTestId('pay-form')).toBeVisible();
  await expect(page.getByTestId('pay-button')).toBeEnabled();
  await expect(page.getByTestId('expires-at')).toHaveText(clockTimeUtc(link.expiresAt));

  // countdown.js runs under the page's Content-Security-Policy: nothing may be refused.
  await expect(page.getByTestId('countdown')).toBeVisible();
  // A timer, not a live region: screen readers are not told the time every second.
  await expect(page.getByTestId('countdown')).toHaveAttribute('role', 'timer');
  await expect(page.getByTestId('countdown')).not.toHaveAttribute('aria-live', /polite|assertive/);
  expect(errors, 'console errors / CSP violations on the pay page').toEqual([]);
});

test('the countdown shows the time left and visibly ticks', async ({ page, merchant }) => {
  const link = await merchant.createLink({ ttlSeconds: 600 });
  await openPayPage(page, link);

  const countdown = page.getByTestId('countdown');
  await expect(countdown).toBeVisible();
  await expect(countdown).toHaveText(/^Time left: \d+:\d\d$/);
  const first = (await countdown.textContent()) ?? '';
  const left = secondsLeft(first);
  expect(left, 'a 600 s link has about ten minutes left').toBeGreaterThan(570);
  expect(left).toBeLessThanOrEqual(600);

  // It ticks every second; within ~2 s the text must have moved on, and downwards.
  await expect(countdown).not.toHaveText(first, { timeout: 3_000 });
  const later = secondsLeft((await countdown.textContent()) ?? '');
  expect(later).toBeLessThan(left);
  expect(left - later).toBeLessThanOrEqual(3);
});

for (const [device, skewMinutes] of [
  ['two hours fast', 120],
  ['an hour slow', -60],
] as const) {
  test(`the countdown is right even when the payer's clock is ${device}`, async ({ page, merchant }) => {
    // The page carries the server's time; a wrong device clock must not show a live link as
    // expired, nor promise more time than the link has.
    await page.clock.setSystemTime(new Date(Date.now() + skewMinutes * 60_000));
    const link = await merchant.createLink({ ttlSeconds: 600 });
    await openPayPage(page, link);

    const countdown = page.getByTestId('countdown');
    await expect(countdown).toHaveText(/^Time left: \d+:\d\d$/);
    const first = (await countdown.textContent()) ?? '';
    const left = secondsLeft(first);
    expect(left).toBeGreaterThan(570);
    expect(left).toBeLessThanOrEqual(600);
    await expect(page.getByTestId('pay-button')).toBeEnabled();
    await expect(page.getByTestId('expired-message')).toBeHidden();
    await expect(countdown).not.toHaveText(first, { timeout: 3_000 });
  });
}

test('the pay page arrives with the security headers of the contract', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  const response = await openPayPage(page, link);
  const headers = await response.allHeaders();
  // The token is in the URL: never cached, never sent on as a referrer.
  expect(headers['cache-control']).toContain('no-store');
  expect(headers['referrer-policy']).toBe('no-referrer');
  expect(headers['x-content-type-options']).toBe('nosniff');
  const csp = headers['content-security-policy'] ?? '';
  expect(csp).toMatch(/frame-ancestors 'none'/);
  expect(csp).toMatch(/form-action 'self'/);
  expect(csp).not.toMatch(/'unsafe-inline'/);
  expect(headers['content-type']).toMatch(/^text\/html/);
});

test('the expiry time is shown as a machine-readable <time>', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  const time = page.getByTestId('expires-at');
  await expect(time).toBeVisible();
  const datetime = await time.getAttribute('datetime');
  expect(datetime, '<time datetime> is set').toBeTruthy();
  expect(Date.parse(datetime!)).toBe(Date.parse(link.expiresAt));
});

const currencies: Array<[string, number, string]> = [
  ['JPY', 1999, formatAmount(1999, 'JPY', 0)],
  ['KWD', 1999, formatAmount(1999, 'KWD', 3)],
  ['EUR', 5, formatAmount(5, 'EUR')],
  ['usd', 123456789, formatAmount(123456789, 'USD')],
];

for (const [currency, amount, shown] of currencies) {
  test(`the amount ${amount} ${currency} reads "${shown}"`, async ({ page, merchant }) => {
    const link = await merchant.createLink({ amount, currency });
    await openPayPage(page, link);
    await expect(page.getByTestId('amount')).toHaveText(shown);
    await expect(page.getByTestId('pay-button')).toContainText(shown);
  });
}

test('merchant-supplied text is shown as text, never as markup', async ({ page, merchant }) => {
  const markup = '<img src=x onerror=alert(1)><b>bold</b>';
  const link = await merchant.createLink({ orderId: `${merchant.uniqueOrderId()}<b>x</b>`, description: markup });
  let dialog = false;
  page.on('dialog', async (d) => {
    dialog = true;
    await d.dismiss();
  });
  await openPayPage(page, link);
  await expect(page.getByTestId('description')).toHaveText(markup);
  await expect(page.getByTestId('order-id')).toHaveText(link.orderId);
  await expect(page.locator('[data-test=description] img, [data-test=description] b')).toHaveCount(0);
  expect(dialog, 'no script ran').toBe(false);
});
