//! Which partition owns a tenant: partition `n` of `N` owns the tenants
//! with `sha256(tenant) % N == n`; every group key includes the tenant, so
//! each (rule, tenant, key) lives on exactly one instance.

use sha2::{Digest, Sha256};

/// The partition a tenant belongs to.
pub fn partition_of(tenant: &str, partitions: u32) -> u32 {
    let digest = Sha256::digest(tenant.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_has_exactly_one_partition() {
        for tenant in ["acme", "globex", "initech", "a", "zz-top"] {
            for n in 1..=4 {
                assert!(partition_of(tenant, n) < n);
                assert_eq!(partition_of(tenant, n), partition_of(tenant, n), "stable");
            }
            assert_eq!(partition_of(tenant, 1), 0);
        }
    }
}
