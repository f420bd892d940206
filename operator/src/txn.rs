use std::time::Duration;

use etcd_client::{Txn, TxnResponse};
use kvstore::{Client, Error};

/// Deadline of one transaction (as the kvstore client's default request timeout).
const TXN_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs an etcd transaction with a deadline; `op` and `key` name it in errors.
/// (The kvstore client wraps single-key conditional writes; the operator's
/// writes compare several keys at once.)
pub(crate) async fn txn(
    client: &Client,
    op: &'static str,
    key: &str,
    txn: Txn,
) -> Result<TxnResponse, Error> {
    let mut kv = client.raw().kv_client();
    match tokio::time::timeout(TXN_TIMEOUT, kv.txn(txn)).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(source)) => Err(Error::Request {
            op,
            key: key.to_string(),
            source,
        }),
        Err(_) => Err(Error::RequestTimeout {
            op,
            key: key.to_string(),
            timeout: TXN_TIMEOUT,
        }),
    }
}
