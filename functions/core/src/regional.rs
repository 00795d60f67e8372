//! A bucket's client while its region is looked up. Reads go out at once with the configured
//! region's client (where a bucket usually is), alongside GetBucketLocation; a read's answer
//! counts only once the lookup confirms that region, else it is dropped (never seen by the
//! caller, errors included) and the read is sent again with the bucket region's client. So
//! opening an S3 location costs no round trip of its own when the bucket is in the configured
//! region, and one (as before) when it is not.
//!
//! On S3 a request sent to the wrong region fails: 301 PermanentRedirect, or 400 Bad Request for
//! Regions launched after March 20, 2019
//! (https://docs.aws.amazon.com/AmazonS3/latest/API/UsingRouting.html), or 400
//! AuthorizationHeaderMalformed when the signature names another region. Writes wait for the
//! lookup: a write sent twice is not harmless (a conditional one would fail its own condition).

use std::future::Future;

use futures::FutureExt;
use futures::future::{BoxFuture, Either, Shared};

pub struct RegionalClient<C> {
    configured: C,
    /// The bucket region's client when the lookup finds another region; `None` keeps `configured`.
    own: Shared<BoxFuture<'static, Option<C>>>,
}

impl<C: Clone + Send + Sync + 'static> RegionalClient<C> {
    /// A client whose region is known.
    pub fn fixed(client: C) -> Self {
        Self { configured: client, own: futures::future::ready(None).boxed().shared() }
    }

    /// `configured` until `lookup` tells the bucket's own client (`None`: the configured one is
    /// right, or the region could not be told). The lookup starts now, on the runtime.
    pub fn looking_up(configured: C, lookup: impl Future<Output = Option<C>> + Send + 'static) -> Self {
        let own = lookup.boxed().shared();
        tokio::spawn(own.clone());
        Self { configured, own }
    }

    /// The client to write with: waits for the lookup.
    pub async fn settled(&self) -> C {
        self.own.clone().await.unwrap_or_else(|| self.configured.clone())
    }

    /// Runs a read (`op` must have no effect but its answer) with the configured region's client
    /// while the lookup runs; its answer is kept only if the lookup keeps that client.
    pub async fn read<T, F, Fut>(&self, op: F) -> T
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = T>,
    {
        if let Some(own) = self.own.peek() {
            return op(own.clone().unwrap_or_else(|| self.configured.clone())).await;
        }
        let speculative = std::pin::pin!(op(self.configured.clone()));
        match futures::future::select(speculative, self.own.clone()).await {
            Either::Left((answer, lookup)) => match lookup.await {
                None => answer,
                Some(own) => op(own).await,
            },
            Either::Right((None, speculative)) => speculative.await,
            Either::Right((Some(own), _dropped)) => op(own).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A fake client: a region name; a read answers Ok only in the bucket's region.
    #[derive(Clone)]
    struct Fake {
        region: &'static str,
        calls: Arc<Mutex<Vec<&'static str>>>,
    }

    async fn list(c: Fake, bucket_region: &'static str, delay_ms: u64) -> Result<&'static str, String> {
        c.calls.lock().unwrap().push(c.region);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if c.region == bucket_region { Ok(c.region) } else { Err(format!("301 PermanentRedirect from {}", c.region)) }
    }

    fn clients(bucket_region: &'static str, lookup_ms: u64) -> (RegionalClient<Fake>, Arc<Mutex<Vec<&'static str>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let configured = Fake { region: "us-east-1", calls: calls.clone() };
        let own = (bucket_region != "us-east-1").then(|| Fake { region: bucket_region, calls: calls.clone() });
        let lookup = async move {
            tokio::time::sleep(Duration::from_millis(lookup_ms)).await;
            own
        };
        (RegionalClient::looking_up(configured, lookup), calls)
    }

    #[tokio::test]
    async fn same_region_keeps_the_speculative_answer_whichever_comes_first() {
        for (lookup_ms, read_ms) in [(5, 30), (30, 5)] {
            let (c, calls) = clients("us-east-1", lookup_ms);
            assert_eq!(c.read(|cl| list(cl, "us-east-1", read_ms)).await, Ok("us-east-1"));
            assert_eq!(*calls.lock().unwrap(), vec!["us-east-1"], "one request, no second round trip");
        }
    }

    #[tokio::test]
    async fn another_region_drops_the_speculative_answer_and_its_error() {
        for (lookup_ms, read_ms) in [(5, 30), (30, 5)] {
            let (c, calls) = clients("eu-west-1", lookup_ms);
            assert_eq!(c.read(|cl| list(cl, "eu-west-1", read_ms)).await, Ok("eu-west-1"), "the 301 never surfaces");
            assert_eq!(*calls.lock().unwrap(), vec!["us-east-1", "eu-west-1"]);
            // Once known, reads and writes go straight to the bucket's region.
            assert_eq!(c.read(|cl| list(cl, "eu-west-1", 1)).await, Ok("eu-west-1"));
            assert_eq!(c.settled().await.region, "eu-west-1");
            assert_eq!(calls.lock().unwrap().len(), 3);
        }
    }

    #[tokio::test]
    async fn an_error_in_the_right_region_is_the_answer() {
        let (c, calls) = clients("us-east-1", 20);
        assert_eq!(c.read(|cl| list(cl, "nowhere", 1)).await, Err("301 PermanentRedirect from us-east-1".into()));
        assert_eq!(calls.lock().unwrap().len(), 1);
    }
}
