//! Starts detection inside `castellan serve`: the geolocation database,
//! the detectors, webhook delivery and the monitor that follows the audit
//! log.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use castellan_detect::monitor::{Monitor, MonitorSettings};
use castellan_detect::webhook::{DeliverySettings, Dispatcher};
use castellan_detect::{DetectorSettings, Engine, GeoDatabase, Locate};
use castellan_gateway::Gateway;
use castellan_model::DetectSettings;
use castellan_store::AuditRecord;
use castellan_store::Store;
use castellan_vault::MasterKey;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

/// Committed audit batches, of at most 512 records each, that the writer
/// may queue for the monitor. Past that, the writer waits for room for up
/// to `WriterConfig::feed_patience`, then leaves batches out of the feed
/// and the monitor reads them from the store.
pub const FEED_BATCHES: usize = 16;

/// The running monitor and the webhook dispatcher it shares with the
/// rotation jobs.
pub struct Detection {
    pub monitor: JoinHandle<()>,
    pub dispatcher: Dispatcher,
}

/// Loads the geolocation database named in `[detect]`, replays recent
/// audit history into the detectors and starts following the log, with
/// the batches the audit writer sends to `committed`.
///
/// Fails when the database is configured but missing or unreadable, so a
/// typo does not silently turn impossible-travel detection off.
pub async fn start(
    store: Store,
    master_key: Arc<MasterKey>,
    gateway: Arc<Gateway>,
    committed: Receiver<Vec<AuditRecord>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Detection> {
    let config = Arc::clone(&gateway.snapshot.load().config.config);
    let locator = open_locator(&config.detect)?;
    let engine = Engine::new(detector_settings(&config.detect), locator);
    let dispatcher = Dispatcher::new(DeliverySettings::default());
    let view = Box::new(move || Arc::clone(&gateway.snapshot.load().config.config));
    let monitor = Monitor::start(
        store,
        master_key,
        view,
        engine,
        dispatcher.clone(),
        MonitorSettings::default(),
    )
    .await
    .context("cannot start the monitor that feeds the detectors")?;
    let monitor = tokio::spawn(monitor.run(Some(committed), shutdown));
    Ok(Detection {
        monitor,
        dispatcher,
    })
}

fn open_locator(settings: &DetectSettings) -> Result<Option<Arc<dyn Locate>>> {
    let Some(path) = &settings.geoip_database else {
        tracing::info!("no [detect] geoip_database configured; impossible travel is not detected");
        return Ok(None);
    };
    let database = GeoDatabase::open(path)?;
    tracing::info!(path = %path.display(), "geolocation database loaded");
    Ok(Some(Arc::new(database)))
}

/// Applies the `[detect]` table over the detectors' defaults.
pub fn detector_settings(settings: &DetectSettings) -> DetectorSettings {
    DetectorSettings {
        learning_period: settings.learning_period,
        dormant_after: settings.dormant_after,
        max_travel_speed_kmh: f64::from(settings.max_travel_speed_kmh),
        min_travel_distance_km: f64::from(settings.min_travel_distance_km),
        ..DetectorSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_match_detector_defaults() {
        let mapped = detector_settings(&DetectSettings::default());
        let defaults = DetectorSettings::default();
        assert_eq!(mapped.learning_period, defaults.learning_period);
        assert_eq!(mapped.dormant_after, defaults.dormant_after);
        assert_eq!(mapped.max_travel_speed_kmh, defaults.max_travel_speed_kmh);
        assert_eq!(
            mapped.min_travel_distance_km,
            defaults.min_travel_distance_km
        );
    }
}
