import {
  test,
  expect,
  card,
  clockTimeUtc,
  fillCard,
  openPayPage,
  submitPayment,
} from '../support/paylink';

test.use({ javaScriptEnabled: false });

test('without JavaScript the expiry time is shown and the form still pays', async ({ page, merchant }) => {
  const link = await merchant.createLink({ amount: 1000, currency: 'GBP' });
  await openPayPage(page, link);

  // Make sure JavaScript really is off in this page.
  await expect(page.locator('[data-test=countdown]')).toBeHidden();
  await expect(page.getByTestId('countdown')).toHaveText('');

  // The expiry clock time stands in for the countdown.
  await expect(page.getByTestId('expiry')).toBeVisible();
  await expect(page.getByTestId('expires-at')).toBeVisible();
  await expect(page.getByTestId('expires-at')).toHaveText(clockTimeUtc(link.expiresAt));
  await expect(page.getByTestId('expiry')).toContainText('expires at');
  await expect(page.getByTestId('expired-message')).toBeHidden();

  await fillCard(page, card());
  const paid = await submitPayment(page, link);
  expect(paid.status()).toBe(200);
  await expect(page.getByTestId('receipt-title')).toHaveText('Payment successful');
  await expect(page.getByTestId('card-last4')).toHaveText('4242');
  await expect(page.getByTestId('amount')).toHaveText('GBP 10.00');
  expect((await merchant.session(link.token)).status).toBe('paid');
});

test('without JavaScript an invalid form comes back marked', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  await fillCard(page, card('4242 4242 4242 4241'));
  const response = await submitPayment(page, link);
  expect(response.status()).toBe(422);
  await expect(page.getByTestId('field-cardNumber')).toHaveClass(/field-invalid/);
  await expect(page.getByTestId('error-cardNumber')).toBeVisible();
});
