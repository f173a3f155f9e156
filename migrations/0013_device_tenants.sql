-- A device is assigned to a tenant by a platform admin (`DeviceAssigned`);
-- `tenant` is NULL for a device never assigned, which only platform keys
-- see. Written by the `devices` projector from version 2. Migration 13 with
-- 0013_task_tenants.sql (one file per projector's tables).
ALTER TABLE devices ADD COLUMN IF NOT EXISTS tenant text;
CREATE INDEX IF NOT EXISTS devices_by_tenant ON devices (tenant, imei);
