import { test, expect, CARDS, card, fillCard, openPayPage, submitPayment } from '../support/paylink';

test('a declined card shows the reason, the link stays usable, then a good card succeeds', async ({
  page,
  merchant,
}) => {
  const link = await merchant.createLink({ amount: 4200 });
  await openPayPage(page, link);

  await fillCard(page, card(CARDS.declined));
  const declined = await submitPayment(page, link);
  expect(declined.status(), 'a declined payment answers 402').toBe(402);
  await expect(page.getByTestId('decline-reason')).toHaveText('Your card was declined.');
  await expect(page.getByRole('alert').filter({ hasText: 'Your card was declined.' })).toBeVisible();
  // Still the payment form, for the same order, ready for another card.
  await expect(page.getByRole('heading', { name: 'Complete your payment' })).toBeVisible();
  await expect(page.getByTestId('order-id')).toHaveText(link.orderId);
  await expect(page.getByTestId('pay-button')).toBeEnabled();
  // The card number is not echoed back into the form.
  await expect(page.locator('#cardNumber')).toHaveValue('');
  await expect(page.locator('#cvc')).toHaveValue('');
  await expect(page.locator('body')).not.toContainText('4000 0000 0000 0002');
  expect((await merchant.session(link.token)).status).toBe('open');

  await fillCard(page, card(CARDS.insufficientFunds));
  const insufficient = await submitPayment(page, link);
  expect(insufficient.status()).toBe(402);
  await expect(page.getByTestId('decline-reason')).toHaveText('Insufficient funds.');
  expect((await merchant.session(link.token)).status).toBe('open');

  await fillCard(page, card(CARDS.approved));
  const paid = await submitPayment(page, link);
  expect(paid.status()).toBe(200);
  await expect(page.getByTestId('receipt-title')).toHaveText('Payment successful');
  await expect(page.getByTestId('card-last4')).toHaveText('4242');

  const session = await merchant.session(link.token);
  expect(session).toMatchObject({ status: 'paid', cardLast4: '4242' });
});
