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

test('paying with 4242 4242 4242 4242 shows the receipt, and the link is dead afterwards', async ({
  page,
  context,
  merchant,
}) => {
  const link = await merchant.createLink({ amount: 2500, currency: 'EUR' });

  // A second tab holds the same open form, to resubmit it after the payment — with another
  // approved card, so a second charge would show in the merchant's cardLast4.
  const otherTab = await context.newPage();
  await openPayPage(otherTab, link);
  await fillCard(otherTab, card('5555 5555 5555 4444', { cardholderName: 'Second Tab' }));

  await openPayPage(page, link);
  await fillCard(page, card(CARDS.approved));
  const paid = await submitPayment(page, link);

  expect(paid.status(), 'an approved payment answers 200').toBe(200);
  await expect(page.getByTestId('receipt-title')).toHaveText('Payment successful');
  await expect(page).toHaveTitle(/Payment successful/);
  await expect(page.getByTestId('card-last4')).toHaveText('4242');
  await expect(page.getByTestId('amount')).toHaveText('EUR 25.00');
  await expect(page.getByTestId('order-id')).toHaveText(link.orderId);
  if (merchant.name) await expect(page.getByTestId('merchant')).toHaveText(merchant.name);
  // Only the last four digits come back.
  await expect(page.locator('body')).not.toContainText('4242 4242');
  await expect(page.locator('body')).not.toContainText('4242424242424242');

  // Reload of the receipt: the browser sends the POST again.
  const reposted = await page.reload();
  expect(reposted?.request().method(), 'reloading the receipt re-POSTs the form').toBe('POST');
  await expectLinkExpired(page, reposted);

  // Back to the form: fetched again (no-store), and the link is gone.
  const back = await page.goBack();
  expect(new URL(page.url()).pathname).toBe(link.path);
  await expectLinkExpired(page, back);

  // The form still open in the other tab is refused too.
  const resubmitted = await submitPayment(otherTab, link);
  await expectLinkExpired(otherTab, resubmitted);

  // Opening the link afresh: gone.
  await expectLinkExpired(page, await page.goto(link.path));

  // The merchant sees exactly one payment, by the first card.
  const session = await merchant.session(link.token);
  expect(session).toMatchObject({ status: 'paid', cardLast4: '4242', orderId: link.orderId, amount: 2500 });
  expect(session.paidAt).toBeTruthy();
  expect(session.token, 'a finished session no longer shows its token').toBeUndefined();
  expect(session.url).toBeUndefined();
});

test('a paid link tells a later visitor it was already used', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  await fillCard(page, card());
  expect((await submitPayment(page, link)).status()).toBe(200);
  await expect(page.getByTestId('receipt-title')).toBeVisible();

  await expectLinkExpired(page, await page.goto(link.path));
  await expect(page.getByTestId('gone-reason')).toContainText('already been used');
});
