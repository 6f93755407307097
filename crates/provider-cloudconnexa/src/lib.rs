//! provider-cloudconnexa (work in progress)
