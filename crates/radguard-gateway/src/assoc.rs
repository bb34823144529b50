//! One association, from the accepted connection to release or abort: the client connection
//! ([`crate::conn`]), establishment ([`crate::establish`]), then the session with the upstream
//! ([`crate::relay`]) or with the built-in vault ([`crate::vault_scp`]).

use std::net::SocketAddr;
use std::sync::Arc;

use radguard_events::AssocId;
use radguard_policy::Route;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::conn::ClientConn;
use crate::establish::establish;
use crate::shared::{PeerSlot, Shared};

#[allow(clippy::too_many_arguments)]
pub async fn run(
    shared: Arc<Shared>,
    id: AssocId,
    stream: TcpStream,
    source: SocketAddr,
    tls: bool,
    _connection: OwnedSemaphorePermit,
    _slot: PeerSlot,
) {
    let Some(mut conn) = ClientConn::accept(&shared, id, stream, source, tls).await else {
        return;
    };
    let admitted = match establish(&shared, &mut conn).await {
        Ok(a) => a,
        Err(refusal) => return refusal.send(&shared, &mut conn).await,
    };
    let nothing_to_forward = admitted.plan.iter().all(|p| p.rejected.is_some());
    match admitted.admission.route().clone() {
        // Every context refused: answer the A-ASSOCIATE-AC ourselves, never bother the upstream.
        Route::Vault | Route::Upstream { .. } if nothing_to_forward => {
            crate::vault_scp::run(&shared, conn, admitted).await
        }
        Route::Vault => crate::vault_scp::run(&shared, conn, admitted).await,
        Route::Upstream {
            addr,
            upstream_ae,
            upstream_calling_ae,
        } => {
            let calling =
                upstream_calling_ae.unwrap_or_else(|| admitted.admission.calling_ae().clone());
            crate::relay::run(&shared, conn, admitted, &addr, &calling, &upstream_ae).await
        }
    }
}
